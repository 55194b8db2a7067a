"""A replica whose node is still setting up its runtime environment, on a real local Ray (2 logical GPUs)
with a real embedded Redis and the autoscaler on.

Ray shows such a replica as it shows one waiting for a free GPU: created, no process. But its node has
granted its GPU, which Ray already counts as used. Ripple must neither count that GPU twice (other
endpoints would wait for a GPU that is free) nor tell the user the replica waits for resources. The slow
set-up is a test runtime-env plugin (``slow_setup_plugin``), as a pip install is without a network; it
lasts until the test opens its gate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp, wait_for
from tests.integration.slow_setup_plugin import FIELD, PLUGINS_ENV

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(240)

RAY_INIT = {"num_cpus": 4, "num_gpus": 2}
AUTOSCALER = {"enabled": True, "interval_s": 0.5}


@pytest.fixture(scope="module", autouse=True)
def slow_setup_plugin() -> Iterator[None]:
    """Ray's processes load the plugin (set before the module's Ray starts: autouse goes first)."""
    before = os.environ.get("RAY_RUNTIME_ENV_PLUGINS")
    os.environ["RAY_RUNTIME_ENV_PLUGINS"] = PLUGINS_ENV
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_RUNTIME_ENV_PLUGINS", None)
        else:
            os.environ["RAY_RUNTIME_ENV_PLUGINS"] = before


def _setting_up(rp: Ripple, endpoint: str) -> dict[str, Any] | None:
    ws = rp.workers(endpoint)
    return ws[0] if len(ws) == 1 and ws[0].get("settingUp") else None


def test_a_replica_being_set_up_holds_its_gpu_once_and_says_what_it_waits_for(
    rp: Ripple, tmp_path: Path
) -> None:
    gate = tmp_path / "set-up-done"
    rp.create_endpoint("slow", "work_async", gpus=1, cpus=0, runtimeEnv={FIELD: str(gate)})
    rp.create_endpoint("quick", "work_async", gpus=1, cpus=0)
    (slow_job,) = rp.submit("slow", [{"value": 1}])
    w = wait_for(lambda: _setting_up(rp, "slow"), 30, "the slow replica being set up")
    assert w["state"] == "starting" and not w["pendingPlacement"], w
    assert w["reason"] == "setting up: starting its worker process", w

    queued = rp.call(rp.queue.status.remote("slow", slow_job))
    assert queued["waitReason"] == {
        "code": "scaling_up",
        "message": "1 replica starting: starting its worker process",
    }, queued

    # The other GPU is free: a job of another endpoint starts a replica there at once, while the slow
    # replica is still being set up (before, its GPU counted twice and "quick" waited with no_gpu).
    started_s = time.monotonic()
    (quick_job,) = rp.submit("quick", [{"value": 2}])
    (done,) = rp.wait_final([quick_job], 60)
    assert done["status"] == "COMPLETED", done
    print(f"quick's job done {time.monotonic() - started_s:.1f} s after submit")
    assert _setting_up(rp, "slow"), "the slow replica was still being set up"
    blocked = [h for h in rp.history("quick") if h["kind"] == "blocked"]
    assert not blocked, blocked

    gate.touch()
    (slow_done,) = rp.wait_final([slow_job], 60)
    assert slow_done["status"] == "COMPLETED", slow_done


def test_a_replica_adopted_while_being_set_up_is_still_seen_being_set_up(rp: Ripple, tmp_path: Path) -> None:
    """A pool that restarts while its replica's node sets it up adopts it: it knows what the replica asks
    for from the replica's version, so it still tells set-up from waiting (before: waiting for resources,
    its GPU counted twice)."""
    gate = tmp_path / "set-up-done"
    rp.create_endpoint("adopting", "work_async", gpus=1, cpus=0, minReplicas=1, runtimeEnv={FIELD: str(gate)})
    wait_for(lambda: _setting_up(rp, "adopting"), 30, "the replica being set up")
    pool = rp.pool("adopting")
    ray.kill(pool, no_restart=False)  # the pool's process dies; Ray restarts the (detached) pool

    def adopted_setting_up() -> dict[str, Any] | None:
        try:
            (replica,) = rp.pool_replicas("adopting")
        except (ray.exceptions.RayActorError, ValueError):  # restarting, or not adopted yet
            return None
        return _setting_up(rp, "adopting") if replica["adopted"] else None

    w = wait_for(adopted_setting_up, 30, "the restarted pool to adopt the replica being set up")
    assert not w["pendingPlacement"] and w["reason"] == "setting up: starting its worker process", w
    gate.touch()
    (job,) = rp.submit("adopting", [{"value": 3}])
    (done,) = rp.wait_final([job], 60)
    assert done["status"] == "COMPLETED", done
