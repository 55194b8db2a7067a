"""What ``ripple doctor`` read from the Kubernetes API about the RayCluster it runs in (plain values).

Filled by :mod:`orchestrator.ops.doctor.kubernetes` (the only module that talks to the API), read by the
pure rules of :mod:`orchestrator.ops.doctor.rules_k8s`. Times are seconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ContainerFacts:
    """One container's status. ``waiting_reason``: e.g. CrashLoopBackOff, ImagePullBackOff;
    ``last_terminated_reason`` / ``last_exit_code``: how its previous run ended (e.g. OOMKilled, 137)."""

    name: str
    ready: bool = False
    restarts: int = 0
    waiting_reason: str | None = None
    waiting_message: str | None = None
    terminated_reason: str | None = None
    last_terminated_reason: str | None = None
    last_exit_code: int | None = None
    memory_limit: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class EventFacts:
    """A Kubernetes event about a pod (``type``: Normal or Warning)."""

    reason: str
    message: str
    type: str = "Warning"
    count: int = 1
    last_s: float | None = None


@dataclass(frozen=True)
class PodFacts:
    """One pod of the RayCluster. ``group``: its worker group (``headgroup`` for the head);
    ``unschedulable``: the scheduler's message while it cannot be placed (PodScheduled=False);
    ``failed_reason`` / ``failed_message``: why the kubelet refused or ended it (phase Failed:
    ``SysctlForbidden``, ``Evicted``, ``OutOfcpu``, ...)."""

    name: str
    group: str
    node_type: str  # head | worker
    phase: str
    gpus: float = 0.0
    created_s: float | None = None
    deleting: bool = False
    node_name: str | None = None
    unschedulable: str | None = None
    failed_reason: str | None = None
    failed_message: str | None = None
    containers: tuple[ContainerFacts, ...] = ()
    events: tuple[EventFacts, ...] = ()


@dataclass(frozen=True)
class GroupFacts:
    """A worker group of the RayCluster's spec: replicas as last set by the autoscaler, and its bounds."""

    name: str
    replicas: int
    min_replicas: int
    max_replicas: int
    gpus_per_pod: float = 0.0
    node_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KubeFacts:
    """The RayCluster ``cluster`` in ``namespace``: its pods and worker groups; ``errors`` names what could
    not be read (``pods``, ``events``, ``raycluster``) and why."""

    namespace: str
    cluster: str | None
    pods: tuple[PodFacts, ...] = ()
    groups: tuple[GroupFacts, ...] = ()
    errors: Mapping[str, str] = field(default_factory=dict)
