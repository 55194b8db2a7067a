"""Ray options of Ripple's control actors, apart from :mod:`actors.bootstrap` (which creates them) so that
the actors that create others (the autoscaler its pools) import it without an import cycle."""

from __future__ import annotations

from typing import Any

from orchestrator.names import CONTROL_RESOURCE


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
