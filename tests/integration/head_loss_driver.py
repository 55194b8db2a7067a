"""The Ray driver of the head-loss test (``test_head_loss.py``), run as a subprocess: a driver attached to the
head dies with it, so the test itself never connects to Ray.

``python -m tests.integration.head_loss_driver setup ARGS_JSON``: start Ripple's control actors, create an
endpoint with one GPU replica, submit jobs, wait until the first one runs; prints the facts as JSON.
``python -m tests.integration.head_loss_driver check ARGS_JSON``: wait until every job is final; prints the
jobs, the pool's replicas, the endpoint's workers and the replica's and pool's processes as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import ray

from orchestrator.core.models import EndpointSpec, RunRequest
from orchestrator.names import QUEUE_NAME, pool_name
from tests.integration.ray_fixtures import FINAL, handler, start_ripple, wait_for

ENDPOINT = "hl"


def _pid(actor_id: str) -> int:
    info = ray._private.state.actors(actor_id=actor_id)
    return int(info.get("Pid") or 0)


def _call(fn: Any, timeout_s: float = 10.0) -> Any:
    """``ray.get`` of ``fn()``, None while the actor is restarting."""
    try:
        return ray.get(fn(), timeout=timeout_s)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, ValueError):
        return None


def setup(args: dict[str, Any]) -> dict[str, Any]:
    r = start_ripple(
        args["redis_url"], Path(args["data_dir"]), args["namespace"], args["settings"], args["autoscaler"]
    )
    spec = {"name": ENDPOINT, "handler": handler("work_async"), "gpus": 1, "minReplicas": 1, "maxReplicas": 1}
    ray.get(r.queue.create_endpoint.remote(EndpointSpec.model_validate(spec)))
    (replica,) = r.wait_replicas(ENDPOINT, 1, 90)
    reqs = [
        RunRequest.model_validate({"input": {"value": k, "sleep_s": s, "log": args["log"]}})
        for k, s in enumerate(args["sleeps"])
    ]
    ids = list(ray.get(r.queue.submit.remote(ENDPOINT, reqs)))
    r.wait_status(ids[0], "IN_PROGRESS", 30)
    pool = r.pool(ENDPOINT)
    return {
        "jobs": ids,
        "replica": {"id": replica["id"], "actorId": replica["actorId"], "pid": _pid(replica["actorId"])},
        "pool": {"actorId": pool._actor_id.hex(), "pid": _pid(pool._actor_id.hex())},
    }


def check(args: dict[str, Any]) -> dict[str, Any]:
    ns = args["namespace"]

    def queue() -> Any:
        return ray.get_actor(QUEUE_NAME, namespace=ns)

    def jobs() -> list[dict[str, Any]] | None:
        out = [_call(lambda j=j: queue().get_job.remote(j)) for j in args["jobs"]]
        return out if all(j is not None and j["status"] in FINAL for j in out) else None

    t0 = time.monotonic()
    done = wait_for(jobs, args["timeout_s"], "every job final", 0.5)
    final_s = time.monotonic() - t0

    def adopted() -> Any:
        # The restarted pool answers before it has adopted what survived (the jobs may end before that:
        # the replica takes from the store): wait until it lists a replica.
        s = _call(lambda: ray.get_actor(pool_name(ENDPOINT), namespace=ns).summary.remote())
        return s if s is not None and s["replicas"] else None

    pool_summary = wait_for(adopted, 30, "the restarted pool to list its replica", 0.5)
    pool = ray.get_actor(pool_name(ENDPOINT), namespace=ns)
    replicas = pool_summary["replicas"]
    return {
        "jobs": done,
        "finalAfterS": round(final_s, 1),
        "replicas": replicas,
        "replicaPids": {r["actorId"]: _pid(r["actorId"]) for r in replicas},
        "workers": ray.get(queue().list_workers.remote(ENDPOINT)),
        "pool": {"actorId": pool._actor_id.hex(), "pid": _pid(pool._actor_id.hex())},
    }


def main() -> None:
    command, args = sys.argv[1], json.loads(sys.argv[2])
    ray.init(address=args["address"], namespace=args["namespace"], log_to_driver=False)
    out = setup(args) if command == "setup" else check(args)
    print("RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
