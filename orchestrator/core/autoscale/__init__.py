"""Ripple's autoscaling policy: pure functions and values, no Ray, no Redis, no clock.

The autoscaler actor gathers a :class:`Snapshot`, calls :func:`decide`, saves the returned
:class:`AutoscalerState` (``to_dict()``), then applies the decisions (:class:`ScaleUp`, :class:`Prewarm`,
:class:`Drain`; :class:`Blocked` is a record only). See ``docs/autoscaling.md``.
"""

from __future__ import annotations

from orchestrator.core.autoscale.keepalive import (
    GapHistogram,
    KeepAliveConfig,
    KeepAlivePlan,
    plan_keep_alive,
)
from orchestrator.core.autoscale.model import (
    AutoscaleConfig,
    AutoscalerState,
    Blocked,
    Decision,
    Drain,
    EndpointMemory,
    EndpointView,
    Override,
    Prewarm,
    ReplicaView,
    ScaleUp,
    Snapshot,
    decision_to_dict,
)
from orchestrator.core.autoscale.policy import decide
from orchestrator.core.autoscale.priority import effective_priority, load_boost, starvation_boost

__all__ = [
    "AutoscaleConfig",
    "AutoscalerState",
    "Blocked",
    "Decision",
    "Drain",
    "EndpointMemory",
    "EndpointView",
    "GapHistogram",
    "KeepAliveConfig",
    "KeepAlivePlan",
    "Override",
    "Prewarm",
    "ReplicaView",
    "ScaleUp",
    "Snapshot",
    "decide",
    "decision_to_dict",
    "effective_priority",
    "load_boost",
    "plan_keep_alive",
    "starvation_boost",
]
