"""Where Ripple's own Ray actors go: pure functions of the cluster's declared resources."""

from __future__ import annotations

from typing import Any

CONTROL_RESOURCE = "ripple-control"
"""Custom Ray resource of the node that hosts Ripple's control actors (the head)."""
API_RESOURCE = "ripple-api"
"""Custom Ray resource of the slots for Ripple's HTTP ingress replicas."""


def ingress_actor_options(cluster_resources: dict[str, float]) -> dict[str, Any]:
    """Ray options of an HTTP ingress replica: no CPU held, and kept off the GPU nodes that come and go.

    A cluster that declares ``ripple-api`` slots (cluster.yaml's head, KubeRay's api pods) gets one slot
    per replica; otherwise a cluster with a ``ripple-control`` node (the head) hosts the ingress there.
    Without either (a plain ``ray start``) the replica goes wherever Serve puts it. Kept off the GPU
    nodes because a node that still hosts an ingress replica cannot finish a drain before Serve's proxy
    on it has drained (30 s or more), and scale-down waits for it.
    """
    opts: dict[str, Any] = {"num_cpus": 0}
    if cluster_resources.get(API_RESOURCE, 0) >= 1:
        opts["resources"] = {API_RESOURCE: 1}
    elif cluster_resources.get(CONTROL_RESOURCE, 0) >= 1:
        opts["resources"] = {CONTROL_RESOURCE: 1}
    return opts
