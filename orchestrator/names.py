"""Names of Ripple's Ray actors and apps, and the lookup of a named actor.

Kept free of heavy imports: worker replicas import it, and every import there is cold-start time.
"""

from __future__ import annotations

from typing import Any

from orchestrator.core.errors import NotReady
from orchestrator.core.placement import API_RESOURCE as API_RESOURCE
from orchestrator.core.placement import CONTROL_RESOURCE as CONTROL_RESOURCE

QUEUE_NAME = "ripple-queue"
AUTOSCALER_NAME = "ripple-autoscaler"
APP_NAME = "ripple"


def pool_name(endpoint: str) -> str:
    """The WorkerPool actor of an endpoint."""
    return f"pool:{endpoint}"


def get_actor(name: str, namespace: str) -> Any:
    """Handle of a named actor; raises NotReady when it does not exist."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        raise NotReady(f"actor {name!r} is not running in namespace {namespace!r}") from None
