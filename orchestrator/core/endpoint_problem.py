"""Why an endpoint's pool cannot serve, said on the endpoint itself. Pure.

An endpoint whose replicas cannot start must never look merely idle. :func:`endpoint_problem` reads what
the queue already knows (the worker views the pool reports, the endpoint's versions, the pool's latest
error) and returns the endpoint's ``problem`` (``GET /api/v1/endpoints/{name}``, ``ripple status``,
doctor, the web UI), or None:

- ``pool_error``: the pool's reconcile step itself fails (Ray refuses the replica's options or runtime
  env), reported within ``POOL_ERROR_TTL_S``;
- ``version_failed``: the newest version failed (its replicas could not load; the previous one serves);
- ``start_failed``: a replica failed to start (runtime env setup, import error, crash at init) and no
  replica started after it became ready;
- ``unplaceable``: a replica has waited longer than ``PENDING_PROBLEM_S`` for a node with its resources.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.core.versions import EndpointVersion, latest

POOL_ERROR_TTL_S = 30.0
"""A pool reports its error at every failing tick (about 1 s apart); older than this, it is over."""
PENDING_PROBLEM_S = 60.0
"""A replica waiting for placement longer than this is a problem (a GPU that no node has free)."""
START_FAILED_PREFIX = "failed to start"
MAX_MESSAGE_CHARS = 500
MAX_DETAIL_CHARS = 3000

_READY_STATES = frozenset({"idle", "busy", "draining"})


def _ms(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return 0.0


def _was_ready(view: Mapping[str, Any]) -> bool:
    """The worker got past starting at some point (its state or its history says so)."""
    if str(view.get("state")) in _READY_STATES:
        return True
    return any(str(h.get("to")) in _READY_STATES for h in view.get("history") or () if isinstance(h, Mapping))


def endpoint_problem(
    workers: Sequence[Mapping[str, Any]],
    versions: Sequence[EndpointVersion],
    pool_error: tuple[str, float] | None,
    now_s: float,
) -> dict[str, Any] | None:
    """The endpoint's problem (see the module docstring) as ``{"code", "message", ...}``, or None.

    ``workers`` are the endpoint's worker views (``firstSeenAt`` in ms); ``pool_error`` is the pool's
    latest error message and when it was reported (wall clock, s); ``now_s`` the wall clock.
    """
    if pool_error is not None and now_s - pool_error[1] <= POOL_ERROR_TTL_S:
        return {
            "code": "pool_error",
            "message": f"the pool cannot start replicas: {pool_error[0]}"[:MAX_MESSAGE_CHARS],
            "at": int(pool_error[1] * 1000),
        }
    top = latest(versions)
    if top is not None and top.state == "failed":
        return {
            "code": "version_failed",
            "message": f"version {top.version} failed: {top.error or 'unknown error'}"[:MAX_MESSAGE_CHARS],
            "version": top.version,
        }
    failed = [w for w in workers if str(w.get("reason") or "").startswith(START_FAILED_PREFIX)]
    if failed:
        last = max(failed, key=lambda w: _ms(w.get("firstSeenAt")))
        since = _ms(last.get("firstSeenAt"))
        recovered = any(_was_ready(w) and _ms(w.get("firstSeenAt")) > since for w in workers)
        if not recovered:
            out: dict[str, Any] = {
                "code": "start_failed",
                "message": (
                    f"{len(failed)} replica(s) failed to start; latest {last.get('workerId')}: "
                    f"{str(last.get('reason'))[len(START_FAILED_PREFIX) :].lstrip(': ')}"
                )[:MAX_MESSAGE_CHARS],
                "workerId": last.get("workerId"),
                "at": int(since),
            }
            if last.get("error"):
                out["detail"] = str(last["error"])[-MAX_DETAIL_CHARS:]
            return out
    for w in workers:
        waited_s = now_s - _ms(w.get("firstSeenAt")) / 1000
        if str(w.get("state")) == "starting" and w.get("pendingPlacement") and waited_s > PENDING_PROBLEM_S:
            return {
                "code": "unplaceable",
                "message": (
                    f"replica {w.get('workerId')} has waited {int(waited_s)} s for a node with the "
                    "resources it asks for (GPUs, GPU type, CPUs, memory)"
                ),
                "workerId": w.get("workerId"),
            }
    return None
