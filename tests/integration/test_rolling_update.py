"""Rolling updates on a real local Ray (2 logical GPUs) with a real embedded Redis, while jobs keep flowing.

One endpoint of 2 replicas of 1 GPU each fills the cluster, so every rollout here runs the "no spare GPU"
path: one old replica drains (finishing its jobs), its replacement of the new version starts, and so on.
v1 -> v2 (a handler change) loses and fails no job and later outputs come from v2; a broken v3 (its module
fails at import) halts, v2 serves at full size again and v3 is failed with its error; going back to v1's
handler rolls again. The autoscaler is off: replica counts come from ``minReplicas``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.ray_fixtures import Ripple, handler, local_ray, module_redis, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(300)

RAY_INIT = {"num_cpus": 6, "num_gpus": 2}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
SETTINGS = {"drain_timeout_s": 40.0}
EP = "roll"


class Stream:
    """Submits a job every ``every_s`` seconds from a thread until stopped; remembers every id."""

    def __init__(self, rp: Ripple, every_s: float = 0.25, job_s: float = 0.3) -> None:
        self.rp, self.every_s, self.job_s = rp, every_s, job_s
        self.ids: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            (job_id,) = self.rp.submit(EP, [{"value": k, "sleep_s": self.job_s}])
            self.ids.append((time.time(), job_id))
            k += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def streaming(rp: Ripple) -> Iterator[Stream]:
    with Stream(rp) as s:
        yield s


def rollout(rp: Ripple) -> dict[str, Any]:
    return dict(rp.pool_summary(EP).get("rollout") or {})


def serving(rp: Ripple, version: int, n: int) -> bool:
    """``n`` idle or busy replicas, all of ``version``, nothing else listed, and the pool at rest."""
    s = rp.pool_summary(EP)
    rs = s["replicas"]
    ro = s.get("rollout") or {}
    return (
        len(rs) == n
        and all(r["state"] in ("idle", "busy") and r["version"] == version for r in rs)
        and ro.get("stable") == version
        and ro.get("status") in ("steady", "done")
    )


def versions_of_workers(rp: Ripple) -> dict[str, int]:
    return {w["workerId"]: w.get("version") for w in rp.workers(EP, live_only=False)}


def queue_versions(rp: Ripple) -> dict[int, dict[str, Any]]:
    """The queue's versions of the endpoint, by number."""
    listing = rp.call(rp.queue.list_versions.remote(EP))
    return {v["version"]: v for v in listing["versions"]}


def check_jobs(rp: Ripple, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Every job final, COMPLETED on its first attempt, run by a replica of the version it says."""
    done = rp.wait_final(ids, timeout_s)
    bad = [(j["id"], j["status"], j.get("error")) for j in done if j["status"] != "COMPLETED"]
    assert not bad, bad
    assert all(j["attempts"] == 1 for j in done), [j for j in done if j["attempts"] != 1]
    by_worker = versions_of_workers(rp)
    for j in done:
        ran_on = by_worker.get(j["workerId"])
        assert ran_on is not None, j
        expected_output = "v2" if ran_on in (2, 5) else None  # v5 is the rollback to v2
        assert j["output"].get("handler") == expected_output, (j, ran_on)
        assert j["version"] == ran_on, j  # the queue records the version that ran it
    return done


def test_rolling_update_loses_no_job_halts_a_broken_version_and_rolls_back(rp: Ripple) -> None:
    rp.create_endpoint(EP, "work_async", gpus=1, minReplicas=2, maxReplicas=3, maxRetries=0)
    wait_for(lambda: serving(rp, 1, 2), 90, "v1 serving on 2 replicas")

    # v1 -> v2 while jobs flow.
    with streaming(rp) as stream:
        time.sleep(2)
        t0 = time.time()
        rp.update_endpoint(EP, handler=handler("work_v2"))
        wait_for(lambda: serving(rp, 2, 2), 120, "v2 serving on 2 replicas")
        rolled_s = time.time() - t0
        time.sleep(2)
    print(f"v1 -> v2 with no spare GPU: {rolled_s:.1f} s, {len(stream.ids)} jobs submitted meanwhile")
    ids = [i for _, i in stream.ids]
    done = check_jobs(rp, ids, 60)
    after = [j for (at, _), j in zip(stream.ids, done, strict=True) if at > t0 + rolled_s + 0.5]
    assert after and all(j["output"].get("handler") == "v2" for j in after)
    before = {j["workerId"] for (at, _), j in zip(stream.ids, done, strict=True) if at < t0}
    assert before and all(versions_of_workers(rp)[w] == 1 for w in before)
    qv = queue_versions(rp)
    assert qv[2]["state"] == "active" and qv[1]["state"] == "retired", qv
    assert qv[2]["changed"] == ["handler"], qv[2]

    # A broken v3: its replica cannot import the handler module. v2 keeps serving at full size.
    v2_ids = {r["id"] for r in rp.pool_replicas(EP)}
    with streaming(rp) as stream:
        rp.update_endpoint(EP, runtimeEnv={"env_vars": {"RIPPLE_TEST_FAIL_IMPORT": "1"}})
        failed = wait_for(lambda: rollout(rp).get("failed"), 90, "v3 failed")
        wait_for(lambda: serving(rp, 2, 2), 90, "v2 back at 2 replicas")
        time.sleep(1)
    (v3, error), *_ = failed.items()
    assert v3 == "3" and "import failed on purpose" in error, failed
    print(
        f"v3 halted: {error}; v2 replicas {sorted(v2_ids)} -> {sorted(r['id'] for r in rp.pool_replicas(EP))}"
    )
    check_jobs(rp, [i for _, i in stream.ids], 60)
    qv = queue_versions(rp)
    assert qv[3]["state"] == "failed" and "import failed on purpose" in qv[3]["error"], qv[3]
    assert qv[2]["state"] == "active", qv

    # Back to v1's code: a new version, rolled out like any other, jobs still flowing.
    with streaming(rp) as stream:
        rp.update_endpoint(EP, handler=handler("work_async"), runtimeEnv=None)
        wait_for(lambda: (v := rollout(rp).get("stable")) not in (2, None) and serving(rp, v, 2), 120, "back")
        time.sleep(1)
    back = rollout(rp)["stable"]
    assert back == 4, rollout(rp)
    done = check_jobs(rp, [i for _, i in stream.ids], 60)
    assert done[-1]["output"].get("handler") is None  # v1's handler again
    qv = queue_versions(rp)
    assert qv[4]["state"] == "active" and qv[2]["state"] == "retired" and qv[3]["state"] == "failed", qv

    # A rollback through the queue (ripple rollback): to v2, the previous good one, as v5.
    with streaming(rp) as stream:
        rp.call(rp.queue.rollback.remote(EP, None))
        wait_for(lambda: serving(rp, 5, 2), 120, "v5 (v2's code) serving")
        time.sleep(1)
    done = check_jobs(rp, [i for _, i in stream.ids], 60)
    assert done[-1]["output"].get("handler") == "v2" and done[-1]["version"] == 5
    qv = queue_versions(rp)
    assert qv[5]["state"] == "active" and qv[5]["handler"] == handler("work_v2"), qv[5]
