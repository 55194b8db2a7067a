"""Chaos soak in the suite (about 2 minutes): ``bench/chaos.py`` for 55 s of chaos.

Jobs of every kind (short, long, streaming, failing) are submitted while replica processes, pool actors, the
queue actor and the autoscaler are killed and the external Redis (AOF on) is SIGKILLed and restarted. Then
every accepted job must be final, none run twice under one attempt or more often than its attempts, each
completed job's output its own, attempts within maxRetries + 1, and no process's memory growing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import KILL_KINDS, ChaosConfig, run_soak

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]


def test_chaos_soak_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    cfg = ChaosConfig(duration_s=55.0, kill_every_s=4.0, drain_timeout_s=90.0, seed=13, warmup_s=15.0)
    report = run_soak(tmp_path, cfg, lambda m: print(f"[chaos] {m}", flush=True))
    figures = report.as_dict()
    print(json.dumps(figures, indent=2))
    assert report.problems() == []
    assert report.accepted >= 50, figures
    assert set(report.submitted) == {"short", "long", "fail", "stream"}, figures
    assert set(report.kills) == set(KILL_KINDS), figures  # every kind of kill happened at least once
    assert report.statuses["COMPLETED"] > 0 and report.statuses["FAILED"] > 0, figures
    # The API replica and the queue lived long enough to be judged; their figures are in the report.
    assert {m["kind"] for m in report.memory} >= {"ServeReplica"}, figures
