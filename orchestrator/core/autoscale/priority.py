"""Effective priority: an endpoint's priority raised under load and the longer its work waits.

    effective = priority
              + high_load_boost                               if queued >= high_load_threshold
              + min(starvation_max_boost,
                    starvation_boost_per_step * floor(wait_s / starvation_step_s))

``wait_s`` is the age of the endpoint's oldest queued job (read from the queue, so it survives restarts of
the autoscaler; when the queue cannot say, the time since the policy first saw work waiting, kept in its
saved state). With the defaults (20 at 10 queued; +10 per 5 minutes, at most +30) an endpoint's effective
priority lies within ``[priority, priority + 50]``: the boost is bounded, and so is the reordering it causes.
"""

from __future__ import annotations

import math

from orchestrator.core.autoscale.model import AutoscaleConfig


def starvation_boost(wait_s: float | None, config: AutoscaleConfig) -> int:
    """``min(max_boost, per_step * floor(wait_s / step_s))``; 0 when nothing waits."""
    if wait_s is None or wait_s <= 0.0:
        return 0
    if not math.isfinite(wait_s):
        return config.starvation_max_boost
    steps = math.floor(wait_s / config.starvation_step_s)
    return min(config.starvation_max_boost, config.starvation_boost_per_step * steps)


def load_boost(queued: int, config: AutoscaleConfig) -> int:
    """``high_load_boost`` when ``queued >= high_load_threshold``, else 0."""
    return config.high_load_boost if queued >= config.high_load_threshold else 0


def effective_priority(priority: int, queued: int, wait_s: float | None, config: AutoscaleConfig) -> int:
    """The formula above. Never below ``priority``, never above ``priority + high_load_boost + max_boost``."""
    if queued <= 0:
        return priority
    return priority + load_boost(queued, config) + starvation_boost(wait_s, config)
