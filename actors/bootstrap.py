"""Starting Ripple's control actors on a Ray cluster: the one place that creates them.

Used by ``ripple up``, ``python -m orchestrator deploy`` and the Serve app's constructor, so all three paths
converge on the same idempotent :func:`ensure_control_actors`.
"""

from __future__ import annotations

from typing import Any

from actors.options import control_options
from orchestrator.boot import BootConfig
from orchestrator.core.errors import NotReady
from orchestrator.names import AUTOSCALER_NAME, QUEUE_NAME


def ensure_queue(boot: BootConfig, timeout_s: float = 60.0) -> Any:
    """Get or create the JobQueue actor and wait until it has recovered from the store."""
    import ray

    from actors.job_queue import JobQueue

    handle = (
        ray.remote(JobQueue)
        .options(**control_options(boot.namespace, QUEUE_NAME, 100_000))
        .remote(boot.queue, boot.namespace)
    )
    _wait(handle.ready.remote(), timeout_s, "job queue")
    return handle


def ensure_control_actors(boot: BootConfig, timeout_s: float = 60.0) -> dict[str, Any]:
    """Idempotently create every control actor; returns their handles by name."""
    handles = {QUEUE_NAME: ensure_queue(boot, timeout_s)}
    try:
        from actors.autoscaler import ensure_autoscaler
    except ImportError:
        return handles
    handles[AUTOSCALER_NAME] = ensure_autoscaler(boot, timeout_s)
    return handles


def _wait(ref: Any, timeout_s: float, what: str) -> Any:
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise NotReady(f"the {what} did not become ready within {timeout_s:.0f} s") from None
