"""The reconcile step of one endpoint's worker pool: pure, clock passed in.

``plan(desired, replicas, now_s, policy) -> PoolPlan`` compares the replicas the pool observes with the
target the autoscaler set and says what to start and what to drain, each with a reason. The pool actor
gathers ``ReplicaInfo`` from its replicas, calls ``plan``, then applies: starts ``to_start`` replicas and
calls the drain hook of every id in ``to_drain``, in order.

Capacity (what counts toward ``desired``) is every replica that is or will be serving:

- STARTING, IDLE and BUSY replicas count, and so does one created but not yet placed for lack of
  resources (``pending_placement``): a slow GPU start or a pending node never causes a second start;
- DRAINING and STOPPED replicas do not count (they are leaving);
- an EVICTED replica (its health gave up) and one on a draining node do not count either: they are
  drained, and replaced by a start when the pool is below ``desired`` without them;
- QUARANTINED, RECOVERING and PENDING replicas count: quarantine is short and temporary, and replacing on
  every quarantine would start replicas only to drain them seconds later. Eviction is the replacement path.

Scale-down drains the cheapest replicas first: not yet placed, then still starting, then idle (unhealthy
before healthy, then longest idle first), then busy last (fewest jobs held first). Ties break on the id,
so a plan is deterministic.

A plan is idempotent: ``plan`` applied to ``apply_plan(replicas, plan, ...)`` (what the pool observes once
the plan took effect) is empty.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from orchestrator.core.health import HealthState
from orchestrator.core.workers import WorkerState, is_active


@dataclass(frozen=True)
class ReplicaInfo:
    """What the pool knows of one replica when it plans.

    ``jobs_held``: jobs it holds now. ``idle_since_s``: when it last became idle (None when busy or
    unknown; an idle replica with None counts as idle since ``now_s``). ``node_draining``: its Ray node is
    being drained or preempted. ``pending_placement``: the actor exists but Ray has not placed it yet.
    """

    id: str
    state: WorkerState
    health: HealthState = HealthState.PENDING
    jobs_held: int = 0
    idle_since_s: float | None = None
    node_draining: bool = False
    pending_placement: bool = False


@dataclass(frozen=True)
class PoolPolicy:
    """Knobs of the reconcile step.

    ``max_in_flight_starts``: at most this many replicas starting or awaiting placement at once (None: no
    limit); further starts wait for a later step. Raises ``ValueError`` when it is below 1.
    """

    max_in_flight_starts: int | None = None

    def __post_init__(self) -> None:
        if self.max_in_flight_starts is not None and self.max_in_flight_starts < 1:
            raise ValueError(f"max_in_flight_starts ({self.max_in_flight_starts}) must be >= 1 or None")


DEFAULT_POOL_POLICY = PoolPolicy()


@dataclass(frozen=True)
class PlannedDrain:
    """One replica to drain and why. ``replace``: a start in the same plan takes its place."""

    replica_id: str
    reason: str
    replace: bool = False


@dataclass(frozen=True)
class PoolPlan:
    """What one reconcile step does. An empty plan (``is_noop``) means the pool is as it should be.

    ``to_start``: replicas to start (replacements included). ``start_reason``: why ("" when none).
    ``drains``: replicas to drain, in order: broken ones (evicted, on a draining node) first, then the
    scale-down picks, cheapest first.
    """

    to_start: int = 0
    start_reason: str = ""
    drains: tuple[PlannedDrain, ...] = ()

    @property
    def to_drain(self) -> tuple[str, ...]:
        """Ids to drain, in order."""
        return tuple(d.replica_id for d in self.drains)

    @property
    def to_replace(self) -> tuple[str, ...]:
        """Ids drained because they are broken or displaced and replaced by a start in this plan."""
        return tuple(d.replica_id for d in self.drains if d.replace)

    @property
    def reasons(self) -> tuple[str, ...]:
        """One human-readable line per action, for logs and the pool's history."""
        lines = [f"start {self.to_start}: {self.start_reason}"] if self.to_start else []
        return (*lines, *(f"drain {d.replica_id}: {d.reason}" for d in self.drains))

    @property
    def is_noop(self) -> bool:
        """True when the plan starts and drains nothing."""
        return self.to_start == 0 and not self.drains


def broken_reason(r: ReplicaInfo) -> str | None:
    """Why a live replica must be drained whatever ``desired`` is (evicted, on a draining node), or None."""
    if r.health is HealthState.EVICTED:
        return "evicted after repeated failures"
    if r.node_draining:
        return "its node is draining"
    return None


def _counts(r: ReplicaInfo) -> bool:
    return is_active(r.state) and broken_reason(r) is None


def _in_flight(r: ReplicaInfo) -> bool:
    return r.pending_placement or r.state is WorkerState.STARTING


_HEALTH_RANK = {
    HealthState.EVICTED: 0,
    HealthState.QUARANTINED: 1,
    HealthState.RECOVERING: 2,
    HealthState.PENDING: 3,
    HealthState.HEALTHY: 4,
}


def drain_key(r: ReplicaInfo, now_s: float) -> tuple[int, int, float, str]:
    """Sort key, cheapest to drain first: not placed, starting, idle (unhealthy first, then longest idle),
    busy (fewest jobs first); ties on the id."""
    if r.pending_placement:
        return (0, 0, 0.0, r.id)
    if r.state is WorkerState.STARTING:
        return (1, 0, 0.0, r.id)
    if r.jobs_held == 0:
        since_s = now_s if r.idle_since_s is None else min(r.idle_since_s, now_s)
        return (2, _HEALTH_RANK[r.health], since_s, r.id)  # earliest idle_since = longest idle first
    return (3, r.jobs_held, float(_HEALTH_RANK[r.health]), r.id)


def _scale_down_reason(r: ReplicaInfo, now_s: float, desired: int) -> str:
    if r.pending_placement:
        what = "not placed yet"
    elif r.state is WorkerState.STARTING:
        what = "still starting"
    elif r.jobs_held == 0:
        idle_s = 0.0 if r.idle_since_s is None else max(0.0, now_s - r.idle_since_s)
        what = f"idle {idle_s:g} s, health {r.health.value}"
    else:
        what = f"busy with {r.jobs_held} job(s), finishes them first"
    return f"scale down to {desired}: {what}"


def plan(
    desired: int,
    replicas: Sequence[ReplicaInfo],
    now_s: float,
    policy: PoolPolicy = DEFAULT_POOL_POLICY,
) -> PoolPlan:
    """One reconcile step towards ``desired`` replicas (the caller's target, already clamped).

    Returns the plan; never mutates ``replicas``. Raises ``ValueError`` when ``desired`` is negative or
    two replicas share an id.
    """
    if desired < 0:
        raise ValueError(f"desired ({desired}) must be >= 0")
    counts = Counter(r.id for r in replicas)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(f"replica ids must be unique, got {duplicates} more than once")

    broken = sorted(
        (r for r in replicas if is_active(r.state) and broken_reason(r) is not None),
        key=lambda r: r.id,
    )
    capacity = [r for r in replicas if _counts(r)]
    shortfall = max(0, desired - len(capacity))
    to_start = shortfall
    if policy.max_in_flight_starts is not None:
        in_flight = sum(1 for r in capacity if _in_flight(r))
        to_start = min(to_start, max(0, policy.max_in_flight_starts - in_flight))

    replaced = min(len(broken), to_start)
    drains = [
        PlannedDrain(
            r.id,
            f"{broken_reason(r)}; "
            + ("replaced" if i < replaced else f"not replaced ({len(capacity)} serve, {desired} desired)"),
            replace=i < replaced,
        )
        for i, r in enumerate(broken)
    ]
    excess = len(capacity) - desired
    if excess > 0:
        picks = sorted(capacity, key=lambda r: drain_key(r, now_s))[:excess]
        drains += [PlannedDrain(r.id, _scale_down_reason(r, now_s, desired)) for r in picks]

    start_reason = ""
    if to_start:
        start_reason = f"{len(capacity)} of {desired} desired serve or are starting"
        if replaced:
            start_reason += f"; {replaced} replace(s) drained replica(s)"
        if to_start < shortfall:
            start_reason += (
                f"; {shortfall - to_start} more wait (max {policy.max_in_flight_starts} in flight)"
            )
    return PoolPlan(to_start=to_start, start_reason=start_reason, drains=tuple(drains))


def apply_plan(
    replicas: Sequence[ReplicaInfo], pool_plan: PoolPlan, new_ids: Sequence[str]
) -> tuple[ReplicaInfo, ...]:
    """What the pool should observe right after applying ``pool_plan``: drained replicas DRAINING, and one
    STARTING replica (health PENDING) per id in ``new_ids``, in order. The pool's "expectations": use it to
    check a plan, or to act on a later step before the new replicas report in.

    Raises ``ValueError`` when ``len(new_ids) != pool_plan.to_start``, a new id is already taken, or a
    drained id is unknown.
    """
    if len(new_ids) != pool_plan.to_start:
        raise ValueError(
            f"new_ids ({len(new_ids)}) must name exactly to_start ({pool_plan.to_start}) replicas"
        )
    known = {r.id for r in replicas}
    if known & set(new_ids) or len(set(new_ids)) != len(new_ids):
        raise ValueError(f"new_ids ({list(new_ids)}) must be unique and not in use")
    drained = set(pool_plan.to_drain)
    if not drained <= known:
        raise ValueError(f"plan drains unknown replicas {sorted(drained - known)}")
    after = [replace(r, state=WorkerState.DRAINING) if r.id in drained else r for r in replicas]
    after += [ReplicaInfo(id=i, state=WorkerState.STARTING) for i in new_ids]
    return tuple(after)
