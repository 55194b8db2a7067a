"""The learned keep-alive: histogram, quantiles, the plan, and the simulator's trace plumbing."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest

from orchestrator.core.autoscale import GapHistogram, KeepAliveConfig, plan_keep_alive
from orchestrator.core.autoscale.keepalive import MAX_GAP_S, N_BINS, bin_edges_s, bin_index

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

pytestmark = pytest.mark.timeout(60)
CFG = KeepAliveConfig()


def hist(gaps: list[float], decay: float = 0.0) -> GapHistogram:
    h = GapHistogram()
    for g in gaps:
        h = h.add(g, decay)
    return h


def plan(h: GapHistogram, quiet_for_s: float | None, cold_start_s: float = 20.0):  # type: ignore[no-untyped-def]
    return plan_keep_alive(
        h, quiet_for_s=quiet_for_s, fixed_idle_s=60.0, cold_start_s=cold_start_s, config=CFG
    )


def test_bins_cover_the_range_and_edges_hold_their_gaps() -> None:
    assert bin_index(0.2) == 0 and bin_index(MAX_GAP_S) == N_BINS - 1 and bin_index(1e9) == N_BINS - 1
    for gap in (1.0, 1.5, 59.9, 60.0, 3600.0, MAX_GAP_S - 1):
        lo, hi = bin_edges_s(bin_index(gap))
        assert lo <= gap < hi * (1 + 1e-12)


def test_quantiles_track_the_samples_including_conditional_ones() -> None:
    rng = random.Random(1)
    xs = sorted(rng.expovariate(1 / 60) for _ in range(4000))
    h = hist(xs)
    for q in (0.05, 0.5, 0.99):
        assert h.quantile_s(q) == pytest.approx(xs[int(q * len(xs))], rel=0.1)
    above = [x for x in xs if x > 100]
    assert h.quantile_s(0.05, above_s=100) == pytest.approx(above[int(0.05 * len(above))], rel=0.1)
    assert math.isnan(GapHistogram().quantile_s(0.5))


def test_decay_forgets_an_old_pattern() -> None:
    h = hist([10.0] * 100 + [1000.0] * 200, decay=0.05)
    assert h.quantile_s(0.05) > 500


def test_round_trips_through_json() -> None:
    h = hist([0.5, 3.0, 90.0, 90.0, 20_000.0], decay=0.02)
    back = GapHistogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.counts == pytest.approx(h.counts)


def test_falls_back_to_fixed_when_not_representative() -> None:
    few = plan(hist([600.0] * 3), 0.0)
    assert not few.learned and few.keep_alive_s == 60.0 and "fewer" in few.reason
    beyond = plan(hist([600.0] * 10 + [50_000.0] * 5), 0.0)
    assert not beyond.learned and "beyond" in beyond.reason
    rng = random.Random(2)
    spread = plan(hist([math.exp(rng.uniform(0, math.log(MAX_GAP_S))) for _ in range(3000)]), 0.0)
    assert not spread.learned and "spread" in spread.reason


def test_short_regular_gaps_keep_warm_to_the_tail() -> None:
    p = plan(hist([5.0 + (k % 5) for k in range(50)]), 1.0)
    assert p.learned and p.warm  # (its prewarm flag only matters after an early release)
    assert 9.0 <= p.keep_alive_s <= 9.0 * CFG.tail_margin * 1.2


def test_long_predictable_gaps_release_then_prewarm_before_the_head() -> None:
    h = hist([900.0 + (k % 7) for k in range(40)])
    assert not plan(h, 0.0).warm  # release at once
    assert not plan(h, 700.0).warm
    head_s = h.quantile_s(CFG.head_quantile)
    assert 850.0 <= head_s <= 906.0  # bins are ~12% wide: the estimate errs early, not late
    near = plan(h, head_s - (20.0 * (1 + CFG.cold_start_margin) + CFG.prewarm_lead_s) + 1.0)
    assert near.warm and near.prewarm
    assert not plan(h, 2000.0).prewarm  # past the tail: nothing is kept


def test_bimodal_gaps_release_after_the_short_mode() -> None:
    h = hist([2.0] * 60 + [1200.0] * 40)
    assert plan(h, 1.0).warm  # inside a burst
    late = plan(h, 30.0)
    assert not late.warm and "release" in late.reason


def test_azure_format_round_trip_and_a_short_simulation(tmp_path: Path) -> None:
    from bench.simulate import POLICIES, Simulation, total
    from bench.traces import load_azure_csv, write_azure_sample

    path = tmp_path / "invocations_per_function_md.anon.d01.csv"
    write_azure_sample(path, functions=3, minutes=240)
    header = path.read_text().splitlines()[0].split(",")
    assert header[:5] == ["HashOwner", "HashApp", "HashFunction", "Trigger", "1"] and header[-1] == "240"
    trace = load_azure_csv(path, top=2, minutes=240)
    assert len(trace.endpoints) == 2 and trace.duration_s == 240 * 60
    assert all(0 <= t < trace.duration_s for e in trace.endpoints for t in e.arrivals_s)
    results = {p.name: total(Simulation(trace, p, tick_s=2.0).run()) for p in (POLICIES[0], POLICIES[1])}
    jobs = sum(len(e.arrivals_s) for e in trace.endpoints)
    for r in results.values():
        assert r.jobs == jobs and r.unserved == 0 and len(r.delays_s) == jobs
        assert 0 <= r.cold_starts <= jobs and 0 <= r.busy_gpu_s <= r.gpu_s
