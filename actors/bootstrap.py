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


def create_queue(boot: BootConfig) -> Any:
    """Get or create the JobQueue actor without waiting for it (its name is registered on return)."""
    import ray

    from actors.job_queue import JobQueue

    return (
        ray.remote(JobQueue)
        .options(**control_options(boot.namespace, QUEUE_NAME, 100_000))
        .remote(boot.queue, boot.namespace)
    )


def ensure_control_actors(boot: BootConfig, timeout_s: float = 60.0) -> dict[str, Any]:
    """Idempotently create every control actor; returns their handles by name once the queue has
    recovered from the store and the autoscaler's loop runs.

    The autoscaler is created right after the queue's name is registered (its constructor looks the queue
    up), so its process starts while the queue's does and recovers, rather than after.
    """
    from actors.autoscaler import create_autoscaler

    queue = create_queue(boot)
    autoscaler = create_autoscaler(boot)
    _wait(queue.ready.remote(), timeout_s, "job queue")
    _wait(autoscaler.start.remote(), timeout_s, "autoscaler")
    return {QUEUE_NAME: queue, AUTOSCALER_NAME: autoscaler}


def _wait(ref: Any, timeout_s: float, what: str) -> Any:
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise NotReady(f"the {what} did not become ready within {timeout_s:.0f} s") from None
