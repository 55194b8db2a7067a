"""Per-endpoint half of the policy: what one endpoint remembers, wants, and can give back.

:func:`observe` folds a snapshot into the endpoint's memory (arrivals into the idle-gap histogram, the
waiting and quiet clocks); :class:`EndpointPlan` holds the working numbers of one :func:`decide` call for
one endpoint; :func:`scale_down` picks the idle replicas to drain. The cross-endpoint half (GPU
allocation, preemption) is in :mod:`orchestrator.core.autoscale.policy`.
"""

from __future__ import annotations

import math

from orchestrator.core.autoscale.keepalive import KeepAlivePlan, plan_keep_alive
from orchestrator.core.autoscale.model import AutoscaleConfig, EndpointMemory, EndpointView, ReplicaView
from orchestrator.core.autoscale.priority import effective_priority

# A ScaleUp the pool has not shown us yet still counts for this long (crash between save and apply, or a
# second call on the same snapshot): a slow registration never causes a second scale-up.
EXPECTATION_TTL_S = 15.0
# A pre-warm starts as many replicas as the busiest of the last few busy spells needed.
RECENT_PEAKS = 4


def observe(view: EndpointView, mem: EndpointMemory, now_s: float, config: AutoscaleConfig) -> EndpointMemory:
    """``mem`` updated with what ``view`` shows at ``now_s`` (the same object when nothing changed).

    An arrival newer than the remembered one, while the endpoint was quiet, adds the gap
    ``arrival - quiet_since`` to the histogram. The endpoint turns quiet when nothing is queued or running;
    its quiet clock starts when its last replica went idle (or now).
    """
    last_arrival = mem.last_arrival_s
    quiet = mem.quiet_since_s
    gaps = mem.gaps
    arrival = view.last_arrival_s
    if arrival is not None and (last_arrival is None or arrival > last_arrival):
        if quiet is not None and arrival >= quiet:
            gaps = gaps.add(arrival - quiet, config.keep_alive.decay)
        quiet = None
        last_arrival = arrival
    busy = view.queued > 0 or view.running > 0
    peak, peaks = mem.busy_peak_replicas, mem.recent_peaks
    if busy:
        quiet = None
        peak = max(peak, min(view.demand_replicas(), view.max_replicas))
    elif quiet is None and last_arrival is not None:
        went_idle = max((r.idle_since_s for r in view.replicas if r.idle_since_s is not None), default=now_s)
        quiet = min(now_s, max(went_idle, last_arrival))
        if peak > 0:
            peaks, peak = (*peaks[-(RECENT_PEAKS - 1) :], peak), 0
    waiting = (mem.waiting_since_s if mem.waiting_since_s is not None else now_s) if view.queued > 0 else None
    if (
        quiet == mem.quiet_since_s
        and last_arrival == mem.last_arrival_s
        and waiting == mem.waiting_since_s
        and peak == mem.busy_peak_replicas
        and peaks is mem.recent_peaks
        and gaps is mem.gaps
    ):
        return mem
    return EndpointMemory(
        last_scale_up_s=mem.last_scale_up_s,
        last_scale_down_s=mem.last_scale_down_s,
        last_arrival_s=last_arrival,
        quiet_since_s=quiet,
        waiting_since_s=waiting,
        blocked_since_s=mem.blocked_since_s,
        busy_peak_replicas=peak,
        recent_peaks=peaks,
        released_for_s=mem.released_for_s if quiet is not None else None,
        prewarmed_for_s=mem.prewarmed_for_s if quiet is not None else None,
        expected_capacity=mem.expected_capacity,
        expected_at_s=mem.expected_at_s,
        leaving=mem.leaving,
        leaving_at_s=mem.leaving_at_s,
        gaps=gaps,
    )


class EndpointPlan:
    """Working numbers for one endpoint during one call (internal, mutable)."""

    __slots__ = (
        "active",
        "busy",
        "capacity",
        "drain_ids",
        "drain_reason",
        "draining",
        "eff",
        "expected",
        "idle",
        "leaving",
        "mem",
        "preempted",
        "prewarm",
        "prewarm_reason",
        "released",
        "shortage",
        "spare",
        "typed_ups",
        "ups",
        "ups_reason",
        "view",
        "wait_s",
    )

    def __init__(
        self, view: EndpointView, mem: EndpointMemory, now_s: float, config: AutoscaleConfig
    ) -> None:
        self.view = view
        self.mem = mem
        idle: list[ReplicaView] = []
        busy: list[ReplicaView] = []
        starting = unhealthy = draining = 0
        remembered = (
            dict(mem.leaving)
            if mem.leaving_at_s is not None and now_s - mem.leaving_at_s < EXPECTATION_TTL_S
            else {}
        )
        # Drained by an earlier call, not yet listed as draining: id -> the endpoint it was preempted for.
        self.leaving: dict[str, str] = {}
        for r in view.replicas:
            state = r.state
            if r.id in remembered and state in ("idle", "busy", "starting"):
                self.leaving[r.id] = remembered[r.id]
                draining += 1
            elif state == "idle":
                idle.append(r)
            elif state == "busy":
                busy.append(r)
            elif state == "starting":
                starting += 1
            elif state == "unhealthy":
                unhealthy += 1
            elif state == "draining":
                draining += 1
        idle.sort(key=_idle_key)
        self.idle = idle
        self.busy = busy
        self.draining = draining
        seen = len(idle) + len(busy) + starting
        # Replicas asked for recently but not yet listed count as capacity (and as GPUs in use).
        self.expected = 0
        if mem.expected_at_s is not None and now_s - mem.expected_at_s < EXPECTATION_TTL_S:
            self.expected = max(0, mem.expected_capacity - seen)
        self.capacity = seen + self.expected
        self.active = self.capacity + unhealthy
        wait = view.oldest_queued_age_s
        if wait is None and view.queued > 0 and mem.waiting_since_s is not None:
            wait = now_s - mem.waiting_since_s
        self.wait_s = wait
        self.eff = effective_priority(view.priority, view.queued, wait, config)
        self.ups = 0
        self.ups_reason = ""
        self.prewarm = 0
        self.prewarm_reason = ""
        self.released = False
        self.drain_ids: list[str] = []
        self.drain_reason = ""
        self.preempted: dict[str, tuple[list[str], str]] = {}
        self.shortage: list[tuple[int, str]] = []
        self.spare = 0
        self.typed_ups: dict[str, int] = {}  # replicas granted per GPU type ("growth": nodes to come)

    def drained_count(self) -> int:
        return len(self.drain_ids) + sum(len(ids) for ids, _ in self.preempted.values())

    def lost(self) -> int:
        """Its replicas this call preempted or reclaimed for other endpoints (they count as gone)."""
        return sum(len(ids) for ids, _ in self.preempted.values())

    def drained_ids(self) -> set[str]:
        """Its replicas this call drains: scaled down, preempted or reclaimed."""
        return set(self.drain_ids) | {i for ids, _ in self.preempted.values() for i in ids}


def _idle_key(r: ReplicaView) -> float:
    return r.idle_since_s if r.idle_since_s is not None else math.inf


def keep_alive_plan(plan: EndpointPlan, config: AutoscaleConfig, now_s: float) -> KeepAlivePlan | None:
    """The learned plan for a ``keep_alive="learned"`` endpoint, else ``None`` (fixed idle time)."""
    view = plan.view
    if view.keep_alive != "learned":
        return None
    quiet = plan.mem.quiet_since_s
    return plan_keep_alive(
        plan.mem.gaps,
        quiet_for_s=None if quiet is None else now_s - quiet,
        fixed_idle_s=view.scale_down_idle_s,
        cold_start_s=view.cold_start_s,
        config=config.keep_alive,
    )


def scale_down(plan: EndpointPlan, keep: KeepAlivePlan | None, now_s: float) -> None:
    """Choose idle replicas of one endpoint to drain (longest idle first) into ``plan.drain_ids``.

    Only idle replicas are chosen: a busy one is never scaled down. Above a pinned size or above
    ``max_replicas`` the excess goes at once. Otherwise a scale-down needs an empty queue, the
    ``scale_down_cooldown_s`` passed, replicas idle past the keep-alive (or a learned early release), and
    never goes below ``min_replicas``.
    """
    view, mem, idle = plan.view, plan.mem, plan.idle
    if not idle:
        return
    pinned = view.override.desired_replicas if view.override is not None else None
    if pinned is not None or plan.active > view.max_replicas:
        limit = pinned if pinned is not None else view.max_replicas
        excess = (plan.capacity if pinned is not None else plan.active) - limit
        if excess > 0:
            plan.drain_ids = [r.id for r in idle[:excess]]
            what = "pinned size" if pinned is not None else "maxReplicas"
            plan.drain_reason = f"{plan.capacity} replicas above the {what} {limit}: drain idle ones"
        if pinned is not None:
            return
        # Above maxReplicas the excess goes at once; the rest may still be idle long enough to go too (in
        # this same call, so a second call with the same snapshot drains nothing new).
    if view.queued > 0:
        return
    if mem.last_scale_down_s is not None and now_s - mem.last_scale_down_s < view.scale_down_cooldown_s:
        return
    room = plan.capacity - plan.expected - view.min_replicas - len(plan.drain_ids)
    if room <= 0:
        return
    chosen, why = _expired(plan, keep, now_s)
    chosen = [r for r in chosen if r.id not in plan.drain_ids]
    if chosen:
        reason = f"{why}; empty queue; keeping minReplicas {view.min_replicas}"
        plan.drain_ids = [*plan.drain_ids, *(r.id for r in chosen[:room])]
        plan.drain_reason = f"{plan.drain_reason}; {reason}" if plan.drain_reason else reason
        if keep is not None and not keep.warm:
            plan.released = True


def _expired(plan: EndpointPlan, keep: KeepAlivePlan | None, now_s: float) -> tuple[list[ReplicaView], str]:
    view, idle = plan.view, plan.idle
    quiet = plan.mem.quiet_since_s
    if keep is None or not keep.learned or quiet is None:
        limit = view.scale_down_idle_s if keep is None else keep.keep_alive_s
        chosen = [r for r in idle if r.idle_since_s is not None and now_s - r.idle_since_s >= limit]
        why = f"idle >= {limit:g} s" + ("" if keep is None else f" ({keep.reason})")
        return chosen, why
    if not keep.warm:
        return list(idle), f"quiet since {quiet:g} s; {keep.reason}"
    if now_s - quiet >= keep.keep_alive_s:
        return list(idle), f"quiet for {now_s - quiet:.0f} s >= learned keep-alive {keep.keep_alive_s:.0f} s"
    return [], ""


def prewarm_wanted(plan: EndpointPlan, keep: KeepAlivePlan | None) -> int:
    """Replicas to pre-warm now: only for a learned endpoint released early in this quiet spell, once."""
    mem = plan.mem
    quiet = mem.quiet_since_s
    if keep is None or not keep.prewarm or quiet is None:
        return 0
    if mem.released_for_s != quiet or mem.prewarmed_for_s == quiet:
        return 0
    view = plan.view
    target = min(view.max_replicas, max(view.min_replicas, *mem.recent_peaks, 1))
    return max(0, target - plan.capacity + plan.lost())
