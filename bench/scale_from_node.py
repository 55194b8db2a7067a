"""Time from a job's submission to its result when a GPU node must be added first.

Starts a local Ray head whose autoscaler (v2) runs the fake multi-node provider (1-GPU nodes launched as
raylets on this machine; no real cloud, so node boot here is a raylet start, not a VM or pod), deploys
Ripple on it as a Ray job, then for each run: creates a GPU endpoint with ``minReplicas: 1`` and submits
one job at the same moment, and records when the replica was seen waiting for a GPU, when Ray's autoscaler
brought a GPU node up, when the replica was ready, and when the job completed; then one more job on the
warm replica; then deletes the endpoint and waits for Ray to remove the idle node before the next run.

    python -m bench.scale_from_node [--runs 1]

Kills every process it started on exit (never ``ray stop``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.integration.cluster_fixtures import (  # noqa: E402
    LocalCluster,
    RippleOnCluster,
    fake_autoscaling_config,
    wait_for,
)

SETTINGS = {
    "RIPPLE_AUTOSCALER__INTERVAL_S": "1",
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "15",
    "RIPPLE_TAKE_WAIT_S": "2",
}


@dataclass(frozen=True)
class Run:
    """Seconds from the submission of the first job to each milestone (None: not observed)."""

    pending_s: float | None
    node_up_s: float | None
    replica_ready_s: float | None
    first_result_s: float
    warm_result_s: float
    node_gone_s: float | None


def _one_run(ripple: RippleOnCluster, cluster: LocalCluster, k: int) -> Run:
    name = f"cold{k}"
    t0 = time.monotonic()
    ripple.create_endpoint(name, minReplicas=1, maxReplicas=1, scaleDownIdleTime=600)
    with ripple.client() as c:
        r = c.post(f"/v2/{name}/run", json={"input": {"run": k}})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        marks: dict[str, float] = {}
        while "result" not in marks:
            now = time.monotonic() - t0
            if now > 600:
                raise TimeoutError(f"no result after 600 s: {marks}")
            workers = [w for w in ripple.workers(name) if w["state"] != "stopped"]
            if any(w.get("pendingPlacement") for w in workers):
                marks.setdefault("pending", now)
            if cluster.gpus_total() > 0:
                marks.setdefault("node", now)
            if any(w["state"] in ("idle", "busy") for w in workers):
                marks.setdefault("ready", now)
            if c.get(f"/v2/{name}/status/{job_id}").json()["status"] == "COMPLETED":
                marks["result"] = time.monotonic() - t0
            time.sleep(0.2)
        t1 = time.monotonic()
        out = c.post(f"/v2/{name}/runsync", json={"input": {"warm": k}}).json()
        assert out["status"] == "COMPLETED", out
        warm_s = time.monotonic() - t1
        assert c.delete(f"/api/v1/endpoints/{name}").status_code == 200
    t2 = time.monotonic()
    gone: float | None = None
    try:
        wait_for(lambda: cluster.gpus_total() == 0, 300, "the idle node to go", 0.5)
        gone = time.monotonic() - t2
    except AssertionError:
        pass
    return Run(marks.get("pending"), marks.get("node"), marks.get("ready"), marks["result"], warm_s, gone)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(runs: list[Run]) -> str:
    rows = [
        ("replica pending (waits for a GPU)", [r.pending_s for r in runs]),
        ("GPU node up (Ray autoscaler)", [r.node_up_s for r in runs]),
        ("replica ready (handler loaded)", [r.replica_ready_s for r in runs]),
        ("first result", [r.first_result_s for r in runs]),
        ("warm job, submit to result", [r.warm_result_s for r in runs]),
        ("node removed after endpoint delete", [r.node_gone_s for r in runs]),
    ]
    head = f"{'milestone (s from first submit)':<38}" + "".join(
        f"{'run ' + str(i + 1):>9}" for i in range(len(runs))
    )
    lines = [head, "-" * len(head)]
    lines += [f"{label:<38}" + "".join(f"{_fmt(v):>9}" for v in vals) for label, vals in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scale_from_node", description=__doc__)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--idle-timeout-s", type=float, default=10.0, help="Ray autoscaler idle timeout.")
    args = p.parse_args(argv)
    cluster = LocalCluster()
    ripple = RippleOnCluster(cluster, settings_env=SETTINGS)
    runs: list[Run] = []
    try:
        t = time.monotonic()
        cluster.start_head(
            autoscaling=fake_autoscaling_config(max_gpu_nodes=1, idle_timeout_s=args.idle_timeout_s)
        )
        print(f"head up in {time.monotonic() - t:.1f} s", flush=True)
        t = time.monotonic()
        ripple.deploy()
        print(f"Ripple deployed in {time.monotonic() - t:.1f} s", flush=True)
        for k in range(args.runs):
            runs.append(_one_run(ripple, cluster, k))
            print(f"run {k + 1}: {runs[-1]}", flush=True)
    finally:
        ripple.stop_store()
        cluster.teardown()
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
