"""Rolling updates as a pure plan: scenarios (surge, one at a time with no spare GPU, halt on failure,
readiness timeout) and Hypothesis properties over a simulated pool (never fewer ready replicas than the
old version had minus one, never more GPUs than exist, a halted rollout returns to full old size, the plan
converges to all-new)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.health import HealthState
from orchestrator.core.pool_plan import ReplicaInfo
from orchestrator.core.rollout import (
    FailedStart,
    RolloutMemory,
    RolloutPlan,
    RolloutPolicy,
    RolloutStatus,
    RolloutTarget,
    VersionedReplica,
    VersionReport,
    apply_rollout,
    choose_target,
    plan_rollout,
    record_failure,
    remember_versions,
    settle,
)
from orchestrator.core.workers import WorkerState

pytestmark = pytest.mark.timeout(120)

W = WorkerState
H = HealthState
NOW_S = 1000.0


def idle(rid: str, version: int, gpus: float = 1.0, since_s: float = 900.0) -> VersionedReplica:
    return VersionedReplica(ReplicaInfo(rid, W.IDLE, H.HEALTHY, 0, since_s), version, gpus)


def busy(rid: str, version: int, jobs: int = 1, gpus: float = 1.0) -> VersionedReplica:
    return VersionedReplica(ReplicaInfo(rid, W.BUSY, H.HEALTHY, jobs, None), version, gpus)


def starting(
    rid: str, version: int, gpus: float = 1.0, loading_since_s: float | None = None, pending: bool = False
) -> VersionedReplica:
    info = ReplicaInfo(rid, W.STARTING, H.PENDING, pending_placement=pending)
    return VersionedReplica(info, version, gpus, loading_since_s)


def draining(rid: str, version: int, gpus: float = 1.0) -> VersionedReplica:
    return VersionedReplica(ReplicaInfo(rid, W.DRAINING, H.HEALTHY, 1, None), version, gpus)


def target(version: int = 2, stable: int | None = 1, **kw: object) -> RolloutTarget:
    fields: dict[str, object] = {
        "desired": 2,
        "max_replicas": 10,
        "gpus_free": 10.0,
        "gpus_per_replica": 1.0,
        "stable_gpus": 1.0,
        **kw,
    }
    return RolloutTarget(version=version, stable=stable, **fields)  # type: ignore[arg-type]


# Scenarios ------------------------------------------------------------------------------------------


def test_steady_pool_is_pool_plan() -> None:
    p = plan_rollout([idle("a", 1), idle("b", 1)], target(1, 1), NOW_S)
    assert p.status is RolloutStatus.STEADY and p.is_noop
    up = plan_rollout([idle("a", 1)], target(1, 1, desired=3), NOW_S)
    assert up.status is RolloutStatus.STEADY
    assert [(s.version, s.count) for s in up.starts] == [(1, 2)]


def test_first_version_rolls_out_and_is_done_once_ready() -> None:
    p = plan_rollout([], target(1, None), NOW_S)
    assert p.status is RolloutStatus.ROLLING and p.started(1) == 2
    assert plan_rollout([starting("a", 1), starting("b", 1)], target(1, None), NOW_S).is_noop
    done = plan_rollout([idle("a", 1), idle("b", 1)], target(1, None), NOW_S)
    assert done.status is RolloutStatus.DONE and done.stable == 1 and done.is_noop


def test_nothing_to_roll_at_zero_replicas_is_done_at_once() -> None:
    p = plan_rollout([], target(desired=0), NOW_S)
    assert p.status is RolloutStatus.DONE and p.stable == 2 and p.is_noop


def test_surge_starts_new_replicas_before_any_old_one_drains() -> None:
    old = [idle("a", 1), busy("b", 1)]
    p = plan_rollout(old, target(), NOW_S)
    assert p.status is RolloutStatus.ROLLING
    assert [(s.version, s.count) for s in p.starts] == [(2, 2)]
    assert p.drains == ()
    assert sorted(p.retiring) == ["a", "b"]  # counted as replaced: the autoscaler sees 2, not 4


def test_each_ready_new_replica_replaces_an_old_one_idle_first() -> None:
    rs = [busy("a", 1), idle("b", 1), idle("n1", 2), starting("n2", 2)]
    p = plan_rollout(rs, target(), NOW_S)
    assert p.to_drain == ("b",)  # the idle one, not the busy one
    assert "replaced by a ready v2" in p.drains[0].reason
    assert p.retiring == ("a",) and p.status is RolloutStatus.ROLLING
    done = plan_rollout([busy("a", 1), idle("n1", 2), idle("n2", 2)], target(), NOW_S)
    assert done.status is RolloutStatus.DONE and done.to_drain == ("a",) and done.stable == 2


def test_surge_is_bounded_by_free_gpus_and_max_replicas() -> None:
    old = [idle("a", 1), idle("b", 1), idle("c", 1)]
    one_gpu = plan_rollout(old, target(desired=3, gpus_free=1.5), NOW_S)
    assert one_gpu.started(2) == 1 and one_gpu.drains == ()
    at_four = plan_rollout(old, target(desired=3, max_replicas=4), NOW_S)
    assert at_four.started(2) == 1 and at_four.drains == ()
    # A bigger new version: 2 GPUs each, 3 free: one fits.
    big = plan_rollout(old, target(desired=3, gpus_free=3.0, gpus_per_replica=2.0), NOW_S)
    assert big.started(2) == 1


def test_no_spare_gpu_drains_one_old_replica_at_a_time_idle_first() -> None:
    old = [busy("a", 1, jobs=3), idle("b", 1, since_s=990.0), idle("c", 1, since_s=950.0)]
    t = target(desired=3, gpus_free=0.0, ready_floor=2)
    p = plan_rollout(old, t, NOW_S)
    assert p.to_drain == ("c",)  # the longest idle
    assert "no spare GPU" in p.drains[0].reason
    assert p.started(2) == 1  # its replacement waits for the GPU it frees
    # While it drains and its replacement waits or loads, nothing else drains: the floor holds.
    # (The pool debits what a replica waiting for placement will take from the free GPUs.)
    waiting = starting("n1", 2, pending=True)
    assert plan_rollout([*old[:2], draining("c", 1), waiting], replace(t, gpus_free=-1.0), NOW_S).is_noop
    assert plan_rollout([*old[:2], waiting], replace(t, gpus_free=-1.0), NOW_S).is_noop
    assert plan_rollout([*old[:2], starting("n1", 2, loading_since_s=NOW_S)], t, NOW_S).is_noop
    # A bigger new version: the freed GPU is not enough, the replacement does not start yet.
    big = plan_rollout(old, replace(t, gpus_per_replica=2.0), NOW_S)
    assert big.to_drain == ("c",) and big.starts == ()
    p3 = plan_rollout([*old[:2], draining("c", 1)], replace(t, gpus_per_replica=2.0), NOW_S)
    assert p3.is_noop  # below the floor: waits for c to be gone
    p4 = plan_rollout(old[:2], replace(t, gpus_free=1.0, gpus_per_replica=2.0), NOW_S)
    assert p4.is_noop  # still short of a GPU, and the floor (2) forbids a second drain
    # Ready: the next old one (idle before busy) makes room.
    p5 = plan_rollout([*old[:2], idle("n1", 2)], t, NOW_S)
    assert p5.to_drain == ("b",) and p5.started(2) == 1


def test_at_max_replicas_with_free_gpus_drain_and_start_go_together() -> None:
    old = [idle("a", 1), idle("b", 1)]
    p = plan_rollout(old, target(max_replicas=2), NOW_S)
    assert len(p.drains) == 1 and p.started(2) == 1
    assert "at maxReplicas (2)" in p.drains[0].reason


def test_making_room_never_goes_below_the_floor() -> None:
    # One old replica already left (its GPU went elsewhere): no second drain to make room.
    p = plan_rollout([idle("a", 1)], target(desired=2, gpus_free=0.0, ready_floor=1), NOW_S)
    assert p.is_noop and p.status is RolloutStatus.ROLLING


def test_old_replica_not_ready_yet_is_stopped_at_once() -> None:
    p = plan_rollout([idle("a", 1), starting("b", 1, pending=True)], target(), NOW_S)
    assert "b" in p.to_drain and "a" not in p.to_drain
    assert p.started(2) == 2


def test_a_failed_start_halts_and_the_old_version_returns_to_full_size() -> None:
    # One old replica was drained to make room; the new one failed to import.
    rs = [idle("a", 1), starting("n1", 2, loading_since_s=990.0)]
    fail = FailedStart("n0", 2, "ModuleNotFoundError: No module named 'torchh'")
    p = plan_rollout(rs, target(desired=2, gpus_free=1.0, failures=(fail,)), NOW_S)
    assert p.status is RolloutStatus.HALTED and p.stable == 1
    assert p.error == "v2 failed to start: ModuleNotFoundError: No module named 'torchh'"
    assert p.to_drain == ("n1",)  # every replica of the failed version
    assert [(s.version, s.count) for s in p.starts] == [(1, 1)]  # the old one restarted
    # From the next step the pool runs the stable version: steady once full.
    after = plan_rollout([idle("a", 1), idle("r", 1), draining("n1", 2)], target(1, 1), NOW_S)
    assert after.status is RolloutStatus.STEADY and after.is_noop


def test_a_failure_of_another_version_does_not_halt() -> None:
    fail = FailedStart("x", 3, "boom")
    p = plan_rollout([idle("a", 1), idle("b", 1)], target(failures=(fail,)), NOW_S)
    assert p.status is RolloutStatus.ROLLING and p.error is None


def test_readiness_timeout_halts() -> None:
    rs = [idle("a", 1), idle("b", 1), starting("n1", 2, loading_since_s=NOW_S - 31)]
    policy = RolloutPolicy(ready_timeout_s=30.0)
    p = plan_rollout(rs, target(), NOW_S, policy)
    assert p.status is RolloutStatus.HALTED
    assert p.error is not None and "readiness timeout 30 s: RIPPLE_READY_TIMEOUT_S" in p.error
    assert p.to_drain == ("n1",) and p.starts == ()
    # Waiting for placement is not loading: no timeout.
    pending = [idle("a", 1), idle("b", 1), starting("n1", 2, pending=True)]
    assert plan_rollout(pending, target(), NOW_S, policy).status is RolloutStatus.ROLLING


def test_with_several_failures_to_halt_a_timed_out_replica_is_replaced() -> None:
    rs = [idle("a", 1), idle("b", 1), starting("n1", 2, loading_since_s=NOW_S - 31)]
    p = plan_rollout(rs, target(), NOW_S, RolloutPolicy(failures_to_halt=2, ready_timeout_s=30.0))
    assert p.status is RolloutStatus.ROLLING and p.timed_out == ("n1",)
    assert "n1" in p.to_drain and p.started(2) == 2


def test_the_first_version_failing_keeps_retrying_with_the_error() -> None:
    fail = FailedStart("n0", 1, "SyntaxError")
    p = plan_rollout([], target(1, None, failures=(fail,)), NOW_S)
    assert p.status is RolloutStatus.ROLLING and p.error == "v1 failed to start: SyntaxError"
    assert p.started(1) == 2


def test_rolling_back_over_two_old_versions() -> None:
    # v3 failed; v2 had half rolled out over v1. Target v1 again: v2 replicas are rolled away.
    rs = [idle("a", 1), idle("b", 2), draining("c", 3)]
    p = plan_rollout(rs, target(1, 1, gpus_free=0.0), NOW_S)
    assert p.status is RolloutStatus.ROLLING  # c is still draining: nothing else until it is gone
    p2 = plan_rollout(rs[:2], target(1, 1, gpus_free=1.0), NOW_S)
    assert p2.started(1) == 1 and p2.retiring == ("b",)


def test_scale_down_during_a_rollout_drains_old_first() -> None:
    rs = [idle("a", 1), idle("b", 1), idle("n1", 2)]
    p = plan_rollout(rs, target(desired=1), NOW_S)
    assert set(p.to_drain) == {"a", "b"} and p.status is RolloutStatus.DONE


def test_broken_replicas_are_drained_and_replaced_by_the_target() -> None:
    evicted = VersionedReplica(ReplicaInfo("e", W.IDLE, H.EVICTED, 0, 900.0), 1, 1.0)
    p = plan_rollout([idle("a", 1), evicted], target(), NOW_S)
    assert "e" in p.to_drain and p.started(2) == 2


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="desired"):
        target(desired=-1)
    with pytest.raises(ValueError, match="unique"):
        plan_rollout([idle("a", 1), idle("a", 2)], target(), NOW_S)
    with pytest.raises(ValueError, match="failures_to_halt"):
        RolloutPolicy(failures_to_halt=0)
    with pytest.raises(ValueError, match="new_ids"):
        apply_rollout([], RolloutPlan(RolloutStatus.ROLLING, 2, 1), ["x"])


def test_reasons_name_every_action() -> None:
    p = plan_rollout([idle("a", 1), idle("n", 2)], target(desired=2), NOW_S)
    assert p.reasons and all(line.startswith(("start", "drain")) for line in p.reasons)


# Properties over a simulated pool -------------------------------------------------------------------


@dataclass
class Sim:
    """A pool on a cluster of ``gpus_total`` GPUs. Each step plans and applies; Ray places a started
    replica once its GPUs are free (until then it waits, pending placement). Then the world moves: drained
    replicas finish and release their GPUs, placed replicas get ready (or fail when their version is
    broken), waiting ones are placed if their GPUs are now free."""

    gpus_total: float
    gpus_of: dict[int, float]
    broken: set[int] = field(default_factory=set)
    replicas: list[VersionedReplica] = field(default_factory=list)
    failures: list[FailedStart] = field(default_factory=list)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def held(self) -> float:
        """GPUs held by placed replicas (draining ones included)."""
        return sum(r.gpus for r in self.replicas if not r.info.pending_placement)

    def demand(self) -> float:
        """GPUs the replicas that stay (not draining) hold or wait for."""
        return sum(r.gpus for r in self.replicas if r.info.state is not W.DRAINING)

    def ready(self) -> int:
        return sum(1 for r in self.replicas if r.info.state in (W.IDLE, W.BUSY))

    def free(self) -> float:
        """Free GPUs less what replicas awaiting placement will take (as the pool debits them)."""
        pending = sum(r.gpus for r in self.replicas if r.info.pending_placement)
        return self.gpus_total - self.held() - pending

    def step(self, t: RolloutTarget) -> RolloutPlan:
        t = replace(t, gpus_free=self.free(), failures=tuple(self.failures))
        p = plan_rollout(self.replicas, t, NOW_S)
        new_ids = [f"r{next(self.ids)}" for s in p.starts for _ in range(s.count)]
        fresh = set(new_ids)
        self.replicas = [
            replace(r, info=replace(r.info, pending_placement=True)) if r.id in fresh else r
            for r in apply_rollout(self.replicas, p, new_ids, self.gpus_of)
        ]
        self._place()
        return p

    def _place(self) -> None:
        for i, r in enumerate(self.replicas):
            if r.info.pending_placement and self.held() + r.gpus <= self.gpus_total + 1e-9:
                info = replace(r.info, pending_placement=False)
                self.replicas[i] = replace(r, info=info, loading_since_s=NOW_S - 1)

    def world(self) -> None:
        out = []
        for r in self.replicas:
            if r.info.state is W.DRAINING:
                continue  # finished its jobs and stopped
            if r.info.state is W.STARTING and not r.info.pending_placement:
                if r.version in self.broken:
                    self.failures.append(FailedStart(r.id, r.version, "ImportError"))
                    continue
                r = replace(r, info=ReplicaInfo(r.id, W.IDLE, H.HEALTHY, 0, 900.0), loading_since_s=None)
            out.append(r)
        self.replicas = out
        self._place()


def _pool(n: int, version: int, gpus: float, busy_mask: Sequence[bool]) -> list[VersionedReplica]:
    """``n`` ready replicas of ``version``: busy where ``busy_mask`` says so, else idle (distinct idle
    times)."""
    return [
        busy(f"o{i}", version, gpus=gpus)
        if i < len(busy_mask) and busy_mask[i]
        else idle(f"o{i}", version, gpus=gpus, since_s=900.0 + i)
        for i in range(n)
    ]


rollouts = st.fixed_dictionaries(
    {
        "desired": st.integers(1, 6),
        "spare": st.integers(0, 4),
        "max_extra": st.integers(0, 4),
        "old_gpus": st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        "new_gpus": st.sampled_from([0.0, 0.5, 1.0, 2.0]),
        "busy": st.lists(st.booleans(), max_size=6),
    }
)


def _setup(case: dict[str, object]) -> tuple[Sim, RolloutTarget]:
    desired = int(case["desired"])  # type: ignore[call-overload]
    old_g, new_g = float(case["old_gpus"]), float(case["new_gpus"])  # type: ignore[arg-type]
    # Enough GPUs for the old pool, and for the new one at full size (the autoscaler's target fits).
    need = desired * max(old_g, new_g)
    total = need + float(case["spare"])  # type: ignore[arg-type]
    sim = Sim(total, {1: old_g, 2: new_g})
    sim.replicas = _pool(desired, 1, old_g, case["busy"])  # type: ignore[arg-type]
    t = RolloutTarget(
        version=2,
        stable=1,
        desired=desired,
        max_replicas=desired + int(case["max_extra"]),  # type: ignore[call-overload]
        gpus_free=0.0,
        gpus_per_replica=new_g,
        stable_gpus=old_g,
        ready_floor=desired - 1,
    )
    return sim, t


@settings(max_examples=300, deadline=None)
@given(rollouts)
def test_property_rollout_keeps_capacity_and_gpus_and_converges_to_all_new(case: dict[str, object]) -> None:
    sim, t = _setup(case)
    old_ready = sim.ready()
    for step in range(4 * t.desired + 6):
        p = sim.step(t)
        assert sim.held() <= sim.gpus_total + 1e-9, (step, p, sim.replicas)
        assert sim.demand() <= sim.gpus_total + 1e-9, (step, p, sim.replicas)
        assert sim.ready() >= old_ready - 1, (step, p, sim.replicas)
        live = [r for r in sim.replicas if r.info.state is not W.DRAINING]
        assert len(live) <= max(t.max_replicas, t.desired), (step, p)
        if p.status is RolloutStatus.DONE:
            break
        sim.world()
    else:
        raise AssertionError(f"no convergence: {sim.replicas}")
    assert p.stable == 2
    sim.world()
    live = [r for r in sim.replicas if r.info.state is not W.DRAINING]
    assert {r.version for r in live} == {2} and len(live) == t.desired
    assert plan_rollout(sim.replicas, replace(t, stable=2), NOW_S).status is RolloutStatus.STEADY


@settings(max_examples=300, deadline=None)
@given(rollouts, st.integers(0, 3))
def test_property_a_halted_rollout_returns_to_full_old_size(case: dict[str, object], fail_after: int) -> None:
    sim, t = _setup(case)
    old_ready = sim.ready()
    halted: RolloutPlan | None = None
    for step in range(4 * t.desired + 6):
        if step == fail_after:
            sim.broken.add(2)  # from now on, every v2 replica fails to start
        p = sim.step(t)
        assert sim.demand() <= sim.gpus_total + 1e-9, (step, p)
        assert sim.ready() >= old_ready - 1, (step, p)
        if p.status is RolloutStatus.HALTED:
            halted = p
            break
        if p.status is RolloutStatus.DONE:
            return  # v2 was all in before it broke: nothing to halt
        sim.world()
    assert halted is not None, sim.replicas
    assert halted.error == "v2 failed to start: ImportError"
    assert all(r.info.state is not W.STARTING for r in sim.replicas if r.version == 2)
    # The pool now runs the stable version: back to full size, v1 only, within the GPUs.
    back = RolloutTarget(
        1, t.desired, t.max_replicas, 0.0, t.stable_gpus, stable=1, stable_gpus=t.stable_gpus
    )
    sim.failures.clear()
    for _ in range(2 * t.desired + 4):
        sim.world()
        p = sim.step(back)
        assert sim.demand() <= sim.gpus_total + 1e-9
        if p.status is RolloutStatus.STEADY and p.is_noop:
            break
    sim.world()
    live = [r for r in sim.replicas if r.info.state is not W.DRAINING]
    assert {r.version for r in live} == {1} and sim.ready() == t.desired


@settings(max_examples=200, deadline=None)
@given(rollouts)
def test_property_plans_are_idempotent_once_applied(case: dict[str, object]) -> None:
    sim, t = _setup(case)
    for _ in range(3 * t.desired + 4):
        p = sim.step(t)
        again = plan_rollout(sim.replicas, replace(t, gpus_free=sim.free()), NOW_S)
        assert again.starts == () and again.drains == (), (p, again)
        if p.status is RolloutStatus.DONE:
            break
        sim.world()


# Memory between steps -------------------------------------------------------------------------------


def test_a_new_version_starts_a_rollout_with_its_ready_floor() -> None:
    version, m = choose_target(RolloutMemory(stable=1, rolling_to=1), 2, ready_now=3)
    assert version == 2 and m.rolling_to == 2 and m.ready_floor == 2 and m.failures == ()
    same, m2 = choose_target(m, 2, ready_now=1)
    assert same == 2 and m2 is m  # the same rollout goes on: its floor stays


def test_failures_count_for_the_version_rolled_out_only() -> None:
    m = RolloutMemory(stable=1, rolling_to=2)
    m = record_failure(m, FailedStart("x", 3, "other"))
    m = record_failure(m, FailedStart("y", 2, "ImportError"))
    assert m.failures == (FailedStart("y", 2, "ImportError"),)


def test_a_halt_is_reported_once_and_the_stable_version_runs_until_another_version() -> None:
    m = RolloutMemory(stable=1, rolling_to=2)
    halted = RolloutPlan(RolloutStatus.HALTED, 2, 1, error="v2 failed to start: boom")
    m, reports = settle(m, halted)
    assert reports == (VersionReport(2, "failed", "v2 failed to start: boom"),)
    assert m.failed_error(2) == "v2 failed to start: boom" and m.stable == 1
    assert settle(m, halted)[1] == ()  # reported once
    version, m = choose_target(m, 2, ready_now=2)
    assert version == 1 and m.rolling_to == 1  # the spec still says 2: run the stable one
    version, m = choose_target(m, 3, ready_now=2)
    assert version == 3  # a new version rolls again


def test_done_makes_the_target_stable_and_active() -> None:
    m, reports = settle(RolloutMemory(stable=1, rolling_to=2), RolloutPlan(RolloutStatus.DONE, 2, 2))
    assert m.stable == 2 and reports == (VersionReport(2, "active"),)
    assert settle(m, RolloutPlan(RolloutStatus.STEADY, 2, 2))[1] == ()


def test_the_first_version_failing_is_reported_failed_once_while_retried() -> None:
    rolling = RolloutPlan(RolloutStatus.ROLLING, 1, None, error="v1 failed to start: SyntaxError")
    m, reports = settle(RolloutMemory(rolling_to=1), rolling)
    assert reports == (VersionReport(1, "failed", "v1 failed to start: SyntaxError"),)
    assert m.failed == () and settle(m, rolling)[1] == ()  # not halted: retried, reported once


def test_timed_out_replicas_become_failures() -> None:
    step = RolloutPlan(RolloutStatus.ROLLING, 2, 1, error="v2 failed to start: not ready", timed_out=("n",))
    m, _ = settle(RolloutMemory(stable=1, rolling_to=2), step)
    assert m.failures == (FailedStart("n", 2, "v2 failed to start: not ready"),)


def test_a_restarted_pool_remembers_what_the_queue_knows() -> None:
    m = remember_versions(RolloutMemory(), 2, [(3, "ImportError")])
    assert m.stable == 2 and m.failed_error(3) == "ImportError" and 3 in m.reported_failed
    assert choose_target(m, 3, ready_now=0)[0] == 2
