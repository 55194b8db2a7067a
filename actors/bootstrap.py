"""Starting Ripple's control actors on a Ray cluster: the one place that creates them.

Used by ``ripple up``, ``python -m orchestrator deploy`` and the Serve app's constructor, so all three paths
converge on the same idempotent :func:`ensure_control_actors`.
"""

from __future__ import annotations

from typing import Any

from orchestrator.boot import BootConfig
from orchestrator.core.errors import NotReady
from orchestrator.names import AUTOSCALER_NAME, CONTROL_RESOURCE, QUEUE_NAME


def control_options(namespace: str, name: str, max_concurrency: int) -> dict[str, Any]:
    """Ray options of a control actor: named, detached, restarted forever, no CPU held, and pinned to
    the node that declares the ``ripple-control`` resource (the head) when the cluster has one."""
    import ray

    opts: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": max_concurrency,
        "num_cpus": 0,
    }
    if ray.cluster_resources().get(CONTROL_RESOURCE, 0) >= 1:
        opts["resources"] = {CONTROL_RESOURCE: 1}
    return opts


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
