"""Rolling updates of one endpoint's pool between versions: pure, clock passed in.

``plan_rollout(replicas, target, now_s, policy) -> RolloutPlan`` is the pool's reconcile step once its
replicas may run different versions of the endpoint. It composes with :func:`orchestrator.core.pool_plan.plan`
(which sizes a pool of one version): when every live replica runs the target version the step *is*
``pool_plan.plan``; otherwise it rolls, by these rules:

- **Surge first.** Replicas of the target version start while the old ones keep serving, as many as the
  target lacks, within ``maxReplicas`` (live replicas: starting, idle, busy; draining ones do not count)
  and the GPUs free for this endpoint (``target.gpus_free``: free in the cluster and within the budget).
  An old replica drains only once a ready replica of the target version replaces it, idle first (longest
  idle first), busy last (fewest jobs first).
- **One at a time when there is no room.** With no spare GPU (or at ``maxReplicas``), and nothing else in
  flight (no replica of the target version starting, nothing else drained in this step), one old replica
  drains, idle first, to make room, and its replacement starts (waiting for the GPUs it frees when that
  is what was short); the next old replica drains once that one is ready. Never below
  ``target.ready_floor`` ready replicas (what the old version had minus one): a freed GPU that another
  endpoint takes meanwhile stalls the rollout rather than draining the pool.
- **Drain, never kill.** A draining replica finishes the jobs it holds on its own version. Only an old
  replica that is not ready yet (nothing to finish) is stopped at once.
- **Halt on failure.** A replica of the target version that fails to start (import error, crash at init,
  recorded by the caller as a :class:`FailedStart`) or stays loading longer than ``ready_timeout_s`` counts
  as a failure; ``failures_to_halt`` of them halt the rollout (``HALTED``, with the error): the target's
  replicas still starting stop (the ones already ready serve until replaced) and the fallback
  (``target.stable``, the version that served before) is started back to ``desired`` within the free
  GPUs; the caller marks the version failed and rolls back to
  ``stable`` from the next step on. With no stable version (the endpoint's first), there is nothing to fall
  back to: the failure is reported (``error``) and the pool keeps retrying (its start backoff).
- **Done** (``DONE``) when no live replica runs another version and ``desired`` replicas of the target are
  ready (at once when ``desired`` is 0: there is nothing to roll).

``retiring`` names the old replicas the rollout already counts as replaced (a replica of the target version
is starting or ready for each): the pool reports them to the autoscaler as leaving, so the surge never
raises the autoscaler's target.

A plan is a frozen value whose every action has a reason; ``plan_rollout`` never mutates its input and
raises ``ValueError`` on inconsistent input (negative counts, duplicate ids).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from orchestrator.core.pool_plan import PlannedDrain, ReplicaInfo, broken_reason, drain_key, plan
from orchestrator.core.workers import WorkerState, is_active

_EPS = 1e-9


class RolloutStatus(str, Enum):
    """Where a rollout stands after one step."""

    STEADY = "steady"  # no rollout: every live replica runs the target, which is the stable version
    ROLLING = "rolling"  # replicas of another version still serve, or the target lacks ready replicas
    DONE = "done"  # this step completes it: the target serves alone (mark it active, the others retired)
    HALTED = "halted"  # the target failed to load: it drains, the stable version serves (mark it failed)


@dataclass(frozen=True)
class VersionedReplica:
    """One replica as the rollout sees it: the pool's view (``info``), the version it runs and the GPUs it
    holds or asks for. ``loading_since_s``: when it was placed and began loading its handler (None while
    it waits for placement, or once ready)."""

    info: ReplicaInfo
    version: int
    gpus: float = 0.0
    loading_since_s: float | None = None

    @property
    def id(self) -> str:
        return self.info.id


@dataclass(frozen=True)
class FailedStart:
    """A replica of ``version`` that failed to start (import error, crash at init), and why."""

    replica_id: str
    version: int
    error: str


@dataclass(frozen=True)
class RolloutTarget:
    """What the pool should run.

    ``version``: the version to run. ``stable``: the version that served before (the fallback when the
    target fails; None for an endpoint's first version). ``desired``: replicas wanted (already clamped to
    min/max). ``max_replicas``: the endpoint's ``maxReplicas`` (live replicas during a surge). ``gpus_free``:
    GPUs this endpoint may still take now (free on the cluster, within the GPU budget, less what its
    replicas waiting for placement will take). ``gpus_per_replica``: of the target; ``stable_gpus``: per
    replica of the stable version. ``failures``: failed starts recorded since the rollout to ``version``
    began. ``ready_floor``: making room never leaves fewer ready replicas than this (the ready replicas when
    the rollout began, minus one; None: ``desired - 1``; never above ``desired - 1``).
    """

    version: int
    desired: int
    max_replicas: int
    gpus_free: float
    gpus_per_replica: float
    stable: int | None = None
    stable_gpus: float = 0.0
    failures: tuple[FailedStart, ...] = ()
    ready_floor: int | None = None

    def __post_init__(self) -> None:
        if self.desired < 0:
            raise ValueError(f"desired ({self.desired}) must be >= 0")
        if self.max_replicas < 0:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= 0")
        if self.gpus_per_replica < 0 or self.stable_gpus < 0:
            raise ValueError(
                f"gpus per replica ({self.gpus_per_replica}, stable {self.stable_gpus}) must be >= 0"
            )


DEFAULT_READY_TIMEOUT_S = 900.0
"""How long a new version's replica may load (placed, not ready) by default (``RIPPLE_READY_TIMEOUT_S``)."""


@dataclass(frozen=True)
class RolloutPolicy:
    """Knobs of a rollout. ``failures_to_halt``: failed starts of the target that halt it (>= 1).
    ``ready_timeout_s``: a replica of the target placed and loading longer than this is a failed start."""

    failures_to_halt: int = 1
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.failures_to_halt < 1:
            raise ValueError(f"failures_to_halt ({self.failures_to_halt}) must be >= 1")
        if self.ready_timeout_s <= 0:
            raise ValueError(f"ready_timeout_s ({self.ready_timeout_s}) must be > 0")


DEFAULT_ROLLOUT_POLICY = RolloutPolicy()


@dataclass(frozen=True)
class VersionStart:
    """Start ``count`` replicas of ``version``, and why."""

    version: int
    count: int
    reason: str


@dataclass(frozen=True)
class RolloutPlan:
    """One step. ``starts``: replicas to start per version. ``drains``: replicas to drain, in order.
    ``retiring``: old replicas already counted as replaced (still serving until drained). ``error``: why
    the target failed (set with ``HALTED``, and with ``ROLLING`` when there is no version to fall back to).
    ``timed_out``: replicas of the target drained because they did not get ready within the timeout (the
    caller records them as failed starts)."""

    status: RolloutStatus
    version: int
    stable: int | None
    starts: tuple[VersionStart, ...] = ()
    drains: tuple[PlannedDrain, ...] = ()
    retiring: tuple[str, ...] = ()
    error: str | None = None
    timed_out: tuple[str, ...] = ()

    @property
    def to_drain(self) -> tuple[str, ...]:
        """Ids to drain, in order."""
        return tuple(d.replica_id for d in self.drains)

    def started(self, version: int) -> int:
        """Replicas of ``version`` this step starts."""
        return sum(s.count for s in self.starts if s.version == version)

    @property
    def reasons(self) -> tuple[str, ...]:
        """One human-readable line per action."""
        lines = [f"start {s.count} of v{s.version}: {s.reason}" for s in self.starts]
        return (*lines, *(f"drain {d.replica_id}: {d.reason}" for d in self.drains))

    @property
    def is_noop(self) -> bool:
        return not self.starts and not self.drains


def _ready(r: VersionedReplica) -> bool:
    return r.info.state in (WorkerState.IDLE, WorkerState.BUSY) and not r.info.pending_placement


def _room(gpus_free: float, gpus_per_replica: float) -> int | float:
    """Replicas of ``gpus_per_replica`` GPUs that fit in ``gpus_free`` (inf when they need none)."""
    if gpus_per_replica <= 0:
        return math.inf
    return max(0, math.floor((gpus_free + _EPS) / gpus_per_replica))


def _gpus_coming(
    replicas: Sequence[VersionedReplica], drains: Sequence[PlannedDrain], gpus_free: float
) -> float:
    """GPUs free now plus those placed replicas that are draining (or drained by this step) will free."""
    drained = {d.replica_id for d in drains}
    leaving = (
        r
        for r in replicas
        if not r.info.pending_placement and (r.info.state is WorkerState.DRAINING or r.id in drained)
    )
    return gpus_free + sum(r.gpus for r in leaving)


def _cheapest(rs: Sequence[VersionedReplica], now_s: float) -> list[VersionedReplica]:
    return sorted(rs, key=lambda r: drain_key(r.info, now_s))


def _validate(replicas: Sequence[VersionedReplica]) -> None:
    counts = Counter(r.id for r in replicas)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    if duplicates:
        raise ValueError(f"replica ids must be unique, got {duplicates} more than once")


def plan_rollout(
    replicas: Sequence[VersionedReplica],
    target: RolloutTarget,
    now_s: float,
    policy: RolloutPolicy = DEFAULT_ROLLOUT_POLICY,
) -> RolloutPlan:
    """One reconcile step of a pool whose replicas may run several versions (see the module docstring).

    Raises ``ValueError`` when two replicas share an id.
    """
    _validate(replicas)
    t = target.version
    live = [r for r in replicas if is_active(r.info.state)]
    broken = [r for r in live if broken_reason(r.info) is not None]
    fallback = target.stable if target.stable is not None and target.stable != t else None
    timed_out = [
        r
        for r in live
        if fallback is not None  # a slow first version (or a steady pool) is left to load: no timeout
        and r.version == t
        and r.info.state is WorkerState.STARTING
        and not r.info.pending_placement
        and r.loading_since_s is not None
        and now_s - r.loading_since_s > policy.ready_timeout_s
    ]
    failures = [f.error for f in target.failures if f.version == t]
    failures += [
        f"not ready {now_s - (r.loading_since_s or now_s):.0f} s after placement "
        f"(readiness timeout {policy.ready_timeout_s:g} s: RIPPLE_READY_TIMEOUT_S)"
        for r in timed_out
    ]
    error = f"v{t} failed to start: {failures[0]}" if failures else None
    if fallback is not None and len(failures) >= policy.failures_to_halt:
        return _halt(live, target, fallback, error or "", now_s)

    gone = {r.id for r in broken} | {r.id for r in timed_out}
    ok = [r for r in live if r.id not in gone]
    drains = [PlannedDrain(r.id, f"{broken_reason(r.info)}; replaced", replace=True) for r in broken]
    drains += [PlannedDrain(r.id, f"{error}; replaced", replace=True) for r in timed_out]
    old = [r for r in ok if r.version != t]
    if not old:
        return _one_version(replicas, ok, gone, target, drains, error, timed_out, now_s)
    return _roll(replicas, ok, old, target, drains, error, timed_out, now_s)


def _one_version(
    replicas: Sequence[VersionedReplica],
    ok: list[VersionedReplica],
    gone: set[str],
    target: RolloutTarget,
    drains: list[PlannedDrain],
    error: str | None,
    timed_out: list[VersionedReplica],
    now_s: float,
) -> RolloutPlan:
    """Every live replica runs the target: ``pool_plan.plan`` sizes the pool (replacing the ones drained
    as broken or timed out)."""
    t = target.version
    infos = [r.info for r in ok] + [ReplicaInfo(r.id, WorkerState.DRAINING) for r in replicas if r.id in gone]
    p = plan(target.desired, infos, now_s)
    starts = (VersionStart(t, p.to_start, p.start_reason),) if p.to_start else ()
    drains += [d for d in p.drains if d.replica_id not in gone]
    drained = set(p.to_drain)
    ready = sum(1 for r in ok if _ready(r) and r.id not in drained)
    if target.stable == t and error is None:
        status = RolloutStatus.STEADY
    elif ready >= target.desired and error is None and not timed_out:
        status = RolloutStatus.DONE
    else:
        status = RolloutStatus.ROLLING
    stable = t if status is RolloutStatus.DONE else target.stable
    return RolloutPlan(status, t, stable, starts, tuple(drains), (), error, tuple(r.id for r in timed_out))


def _roll(
    replicas: Sequence[VersionedReplica],
    ok: list[VersionedReplica],
    old: list[VersionedReplica],
    target: RolloutTarget,
    drains: list[PlannedDrain],
    error: str | None,
    timed_out: list[VersionedReplica],
    now_s: float,
) -> RolloutPlan:
    """Replicas of other versions still serve: surge within the room, replace old ready ones by new ready
    ones, or make room one old replica at a time."""
    t, desired = target.version, target.desired
    new = [r for r in ok if r.version == t]
    old_ready = [r for r in old if _ready(r)]
    # Not ready yet: nothing to finish, and the new version replaces it.
    drains += [
        PlannedDrain(r.id, f"rolling update to v{t}: v{r.version} replica not ready yet, stopped")
        for r in old
        if not _ready(r)
    ]
    # The new version sized on its own: its shortfall, or its excess when the target came down.
    p_new = plan(desired, [r.info for r in new], now_s)
    drains += list(p_new.drains)
    new_kept = [r for r in new if r.id not in set(p_new.to_drain)]
    new_ready = [r for r in new_kept if _ready(r)]
    in_flight = [r for r in new_kept if not _ready(r)]

    # Each ready replica of the new version replaces an old ready one (idle first).
    replaced = max(0, min(len(old_ready), len(old_ready) + len(new_ready) - desired))
    picks = _cheapest(old_ready, now_s)
    drains += [
        PlannedDrain(r.id, f"rolling update to v{t}: replaced by a ready v{t} replica", replace=True)
        for r in picks[:replaced]
    ]
    old_left = picks[replaced:]

    need = p_new.to_start
    live_count = len(new_kept) + len(old_left)
    room_gpus = _room(_gpus_coming(replicas, drains, target.gpus_free), target.gpus_per_replica)
    start = int(min(need, max(0, target.max_replicas - live_count), room_gpus))
    floor = desired - 1 if target.ready_floor is None else min(target.ready_floor, desired - 1)
    ready_after = len(old_left) - 1 + len(new_ready)
    if need > 0 and start == 0 and not in_flight and old_left and ready_after >= floor:
        # No room to surge, nor coming: one old replica makes room, the cheapest first, never below the
        # floor (so a freed GPU another endpoint takes meanwhile costs one replica, not the whole pool).
        r = old_left.pop(0)
        why = "no spare GPU" if room_gpus < 1 else f"at maxReplicas ({target.max_replicas})"
        drains.append(PlannedDrain(r.id, f"rolling update to v{t}: making room ({why}), one at a time"))
        # Its replacements start now (as many as its GPUs fit): placed at once when only maxReplicas was
        # short, else waiting for the GPUs it frees (queued with Ray before anything else can take them).
        start = int(
            min(
                need,
                max(0, target.max_replicas - len(new_kept) - len(old_left)),
                _room(_gpus_coming(replicas, drains, target.gpus_free), target.gpus_per_replica),
            )
        )
    starts: tuple[VersionStart, ...] = ()
    if start:
        starts = (
            VersionStart(t, start, f"rolling update to v{t}: {len(new_kept)} of {desired} replicas on v{t}"),
        )
    retiring_n = max(0, min(len(old_left), len(old_left) + len(new_kept) + start - desired))
    retiring = tuple(r.id for r in old_left[:retiring_n])
    done = not old_left and len(new_ready) >= desired and error is None
    status = RolloutStatus.DONE if done else RolloutStatus.ROLLING
    stable = t if done else target.stable
    return RolloutPlan(
        status, t, stable, starts, tuple(drains), retiring, error, tuple(r.id for r in timed_out)
    )


def _halt(
    live: list[VersionedReplica], target: RolloutTarget, fallback: int, error: str, now_s: float
) -> RolloutPlan:
    """The target failed: stop its replicas still starting (and drain broken ones) and start the fallback
    back to ``desired`` within the free GPUs. Its replicas that did get ready keep serving until the
    fallback replaces them (the next steps roll back to it), so the ready replicas never drop."""
    t = target.version
    drains = [
        PlannedDrain(r.id, f"rollout of v{t} halted: {error}")
        for r in _cheapest([r for r in live if r.version == t and not _ready(r)], now_s)
    ]
    drains += [
        PlannedDrain(r.id, f"{broken_reason(r.info)}; replaced", replace=True)
        for r in live
        if r.version != t and broken_reason(r.info) is not None
    ]
    drained = {d.replica_id for d in drains}
    kept = [r for r in live if r.id not in drained]
    missing = max(0, target.desired - len(kept))
    room = _room(target.gpus_free, target.stable_gpus)
    refill = int(min(missing, max(0, target.max_replicas - len(kept)), room))
    starts = (
        (VersionStart(fallback, refill, f"rollout of v{t} halted: v{fallback} back to {target.desired}"),)
        if refill
        else ()
    )
    return RolloutPlan(RolloutStatus.HALTED, t, fallback, starts, tuple(drains), (), error)


def apply_rollout(
    replicas: Sequence[VersionedReplica],
    rollout: RolloutPlan,
    new_ids: Sequence[str],
    gpus: dict[int, float] | None = None,
) -> tuple[VersionedReplica, ...]:
    """What the pool observes right after applying ``rollout``: drained replicas DRAINING, one STARTING
    replica per id in ``new_ids`` (in the order of ``rollout.starts``), with ``gpus[version]`` GPUs.

    Raises ``ValueError`` when ``new_ids`` does not name exactly the started replicas, or reuses an id.
    """
    total = sum(s.count for s in rollout.starts)
    if len(new_ids) != total:
        raise ValueError(f"new_ids ({len(new_ids)}) must name exactly the {total} started replicas")
    known = {r.id for r in replicas}
    if known & set(new_ids) or len(set(new_ids)) != len(new_ids):
        raise ValueError(f"new_ids ({list(new_ids)}) must be unique and not in use")
    drained = set(rollout.to_drain)
    after = [
        VersionedReplica(ReplicaInfo(r.id, WorkerState.DRAINING), r.version, r.gpus) if r.id in drained else r
        for r in replicas
    ]
    ids = iter(new_ids)
    for s in rollout.starts:
        for _ in range(s.count):
            after.append(
                VersionedReplica(
                    ReplicaInfo(next(ids), WorkerState.STARTING), s.version, (gpus or {}).get(s.version, 0.0)
                )
            )
    return tuple(after)


# Memory between steps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionReport:
    """A version state to report to the queue (``report_version_state``): ``active`` or ``failed``."""

    version: int
    state: str
    error: str | None = None


@dataclass(frozen=True)
class RolloutMemory:
    """What a pool remembers between rollout steps (a value: every change returns a new one).

    ``stable``: the version serving (None before any did). ``rolling_to``: the version the current steps
    run towards. ``failed``: versions whose rollout halted, with the error, as sorted pairs.
    ``failures``: failed starts of ``rolling_to`` since it became the target. ``ready_floor``: the ready
    replicas when it did, minus one. ``reported_failed``: versions already reported failed.
    """

    stable: int | None = None
    rolling_to: int | None = None
    failed: tuple[tuple[int, str], ...] = ()
    failures: tuple[FailedStart, ...] = ()
    ready_floor: int | None = None
    reported_failed: frozenset[int] = frozenset()

    def failed_error(self, version: int) -> str | None:
        return dict(self.failed).get(version)


def remember_versions(
    memory: RolloutMemory, active: int | None, failed: Sequence[tuple[int, str]]
) -> RolloutMemory:
    """What the queue already knows (a restarted pool): the active version serves, failed ones stay failed
    (and are not reported again)."""
    merged = dict(memory.failed) | dict(failed)
    return RolloutMemory(
        stable=active,
        rolling_to=memory.rolling_to,
        failed=tuple(sorted(merged.items())),
        failures=memory.failures,
        ready_floor=memory.ready_floor,
        reported_failed=memory.reported_failed | {v for v, _ in failed},
    )


def choose_target(memory: RolloutMemory, spec_version: int, ready_now: int) -> tuple[int, RolloutMemory]:
    """The version to run: the spec's, or the stable one when the spec's version failed (a halted rollout
    stays halted until the spec names another version). A new target starts a rollout: its failures are
    forgotten and its ready floor is ``ready_now - 1``."""
    version = spec_version
    if memory.failed_error(version) is not None and memory.stable is not None:
        version = memory.stable
    if version == memory.rolling_to:
        return version, memory
    fresh = RolloutMemory(
        stable=memory.stable,
        rolling_to=version,
        failed=memory.failed,
        failures=(),
        ready_floor=max(0, ready_now - 1),
        reported_failed=memory.reported_failed,
    )
    return version, fresh


def record_failure(memory: RolloutMemory, failure: FailedStart) -> RolloutMemory:
    """A replica failed to start: remembered when it ran the version rolled out to."""
    if failure.version != memory.rolling_to:
        return memory
    return _with(memory, failures=(*memory.failures, failure))


def settle(memory: RolloutMemory, step: RolloutPlan) -> tuple[RolloutMemory, tuple[VersionReport, ...]]:
    """Fold a step's outcome into the memory and say what to report: a halted target is failed (once)
    and the stable version serves on; a done one is the stable one, ``active``; the first version failing
    (nothing to fall back to: the pool keeps retrying) is reported failed once."""
    failures = memory.failures + tuple(
        FailedStart(rid, step.version, step.error or "readiness timeout") for rid in step.timed_out
    )
    memory = _with(memory, failures=failures)
    reports: list[VersionReport] = []
    if step.status is RolloutStatus.HALTED:
        failed = dict(memory.failed) | {step.version: step.error or "failed"}
        memory = _with(memory, failed=tuple(sorted(failed.items())))
        reports.append(VersionReport(step.version, "failed", step.error))
    elif step.status is RolloutStatus.DONE and step.version != memory.stable:
        memory = _with(memory, stable=step.version)
        reports.append(VersionReport(step.version, "active"))
    elif step.error and memory.stable is None:
        reports.append(VersionReport(step.version, "failed", step.error))
    once = [r for r in reports if r.state != "failed" or r.version not in memory.reported_failed]
    done = frozenset(r.version for r in once if r.state == "failed")
    return _with(memory, reported_failed=memory.reported_failed | done), tuple(once)


def _with(memory: RolloutMemory, **changes: object) -> RolloutMemory:
    return replace(memory, **changes)  # type: ignore[arg-type]
