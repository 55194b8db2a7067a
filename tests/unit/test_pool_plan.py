"""Pool reconcile step: scenarios and Hypothesis properties (idempotence, never over-start or over-drain)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.health import HealthState
from orchestrator.core.pool_plan import (
    DEFAULT_POOL_POLICY,
    PlannedDrain,
    PoolPlan,
    PoolPolicy,
    ReplicaInfo,
    apply_plan,
    plan,
)
from orchestrator.core.workers import WorkerState, is_active

pytestmark = pytest.mark.timeout(60)

W = WorkerState
H = HealthState
NOW_S = 1000.0


def idle(
    rid: str, idle_since_s: float | None = 900.0, health: HealthState = H.HEALTHY, **kw: bool
) -> ReplicaInfo:
    return ReplicaInfo(rid, W.IDLE, health, 0, idle_since_s, **kw)


def busy(rid: str, jobs: int, health: HealthState = H.HEALTHY, **kw: bool) -> ReplicaInfo:
    return ReplicaInfo(rid, W.BUSY, health, jobs, None, **kw)


def starting(rid: str, **kw: bool) -> ReplicaInfo:
    return ReplicaInfo(rid, W.STARTING, H.PENDING, **kw)


def settle(
    desired: int, replicas: Sequence[ReplicaInfo], policy: PoolPolicy = DEFAULT_POOL_POLICY
) -> PoolPlan:
    """Plans, applies, and checks that the plan on the result is empty (idempotence)."""
    first = plan(desired, replicas, NOW_S, policy)
    new_ids = [f"new-{i}" for i in range(first.to_start)]
    after = apply_plan(replicas, first, new_ids)
    assert plan(desired, after, NOW_S, policy).is_noop
    return first


def test_empty_pool_at_zero_does_nothing() -> None:
    p = plan(0, [], NOW_S)
    assert p.is_noop and p == PoolPlan() and p.reasons == ()


def test_scale_up_from_zero() -> None:
    p = settle(3, [])
    assert p.to_start == 3 and p.to_drain == () and "0 of 3" in p.start_reason
    assert p.reasons == (f"start 3: {p.start_reason}",)


def test_starting_and_pending_placement_count_as_capacity() -> None:
    replicas = [idle("a"), starting("b"), starting("c", pending_placement=True)]
    assert plan(3, replicas, NOW_S).is_noop
    p = settle(4, replicas)
    assert p.to_start == 1


def test_draining_and_stopped_do_not_count() -> None:
    replicas = [idle("a"), ReplicaInfo("b", W.DRAINING, H.HEALTHY, 2), ReplicaInfo("c", W.STOPPED)]
    p = settle(2, replicas)
    assert p.to_start == 1 and p.to_drain == ()


def test_quarantined_replicas_count_and_are_not_replaced() -> None:
    replicas = [idle("a", health=H.QUARANTINED), busy("b", 1, health=H.RECOVERING), starting("c")]
    assert plan(3, replicas, NOW_S).is_noop


def test_scale_down_drains_idle_longest_first_and_keeps_busy() -> None:
    replicas = [busy("b1", 1), idle("i-recent", 990.0), idle("i-old", 100.0), idle("i-mid", 500.0)]
    p = settle(2, replicas)
    assert p.to_start == 0
    assert p.to_drain == ("i-old", "i-mid")
    assert "idle 900 s" in p.drains[0].reason and not any(d.replace for d in p.drains)


def test_scale_down_drains_busy_last_fewest_jobs_first() -> None:
    replicas = [busy("b3", 3), busy("b1", 1), idle("i"), busy("b2", 2)]
    p = settle(1, replicas)
    assert p.to_drain == ("i", "b1", "b2")
    assert "busy with 1 job" in p.drains[1].reason


def test_scale_down_order_across_groups() -> None:
    replicas = [
        busy("busy", 1),
        idle("idle-healthy", 0.0),
        idle("idle-quarantined", 999.0, health=H.QUARANTINED),
        starting("starting"),
        starting("unplaced", pending_placement=True),
    ]
    p = settle(0, replicas)
    assert p.to_drain == ("unplaced", "starting", "idle-quarantined", "idle-healthy", "busy")


def test_idle_with_unknown_since_counts_as_just_idle() -> None:
    replicas = [idle("unknown", None), idle("known", 999.0)]
    assert plan(1, replicas, NOW_S).to_drain == ("known",)


def test_scale_down_to_zero() -> None:
    p = settle(0, [idle("a"), busy("b", 2)])
    assert p.to_drain == ("a", "b") and p.to_start == 0


def test_evicted_is_drained_and_replaced() -> None:
    replicas = [idle("a"), busy("bad", 1, health=H.EVICTED)]
    p = settle(2, replicas)
    assert p.to_start == 1 and p.to_drain == ("bad",) and p.to_replace == ("bad",)
    assert "evicted" in p.drains[0].reason and "replace" in p.start_reason


def test_evicted_is_drained_without_replacement_when_not_needed() -> None:
    p = settle(1, [idle("a"), idle("bad", health=H.EVICTED)])
    assert p.to_start == 0 and p.to_drain == ("bad",) and p.to_replace == ()
    assert "not replaced" in p.drains[0].reason


def test_node_draining_replicas_are_drained_and_replaced() -> None:
    replicas = [idle("a", node_draining=True), busy("b", 2, node_draining=True), idle("c")]
    p = settle(3, replicas)
    assert p.to_start == 2
    assert p.to_drain == ("a", "b") and p.to_replace == ("a", "b")
    assert all("node is draining" in d.reason for d in p.drains)


def test_starting_on_a_draining_node_is_replaced() -> None:
    p = settle(1, [starting("s", node_draining=True)])
    assert p.to_start == 1 and p.to_replace == ("s",)


def test_broken_and_scale_down_together() -> None:
    replicas = [idle("a", 10.0), idle("b", 20.0), idle("c", 30.0), idle("bad", health=H.EVICTED)]
    p = settle(2, replicas)
    assert p.to_drain == ("bad", "a") and p.to_replace == ()


def test_already_draining_evicted_is_left_alone() -> None:
    replicas = [ReplicaInfo("bad", W.DRAINING, H.EVICTED, 1), idle("a")]
    assert plan(1, replicas, NOW_S).is_noop


def test_max_in_flight_starts_limits_starts() -> None:
    policy = PoolPolicy(max_in_flight_starts=2)
    p = settle(5, [starting("s")], policy)
    assert p.to_start == 1 and "3 more wait" in p.start_reason
    assert plan(5, [starting("s"), starting("t")], NOW_S, policy).is_noop
    assert plan(5, [idle("a"), idle("b")], NOW_S, policy).to_start == 2


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"desired \(-1\)"):
        plan(-1, [], NOW_S)
    with pytest.raises(ValueError, match=r"\['a'\]"):
        plan(1, [idle("a"), idle("a"), idle("b")], NOW_S)
    with pytest.raises(ValueError, match="max_in_flight_starts"):
        PoolPolicy(max_in_flight_starts=0)
    p = plan(1, [], NOW_S)
    with pytest.raises(ValueError, match="to_start"):
        apply_plan([], p, [])
    with pytest.raises(ValueError, match="not in use"):
        apply_plan([idle("x")], plan(2, [idle("x")], NOW_S), ["x"])
    with pytest.raises(ValueError, match="unknown"):
        apply_plan([], PoolPlan(drains=(PlannedDrain("ghost", "x"),)), [])


def test_apply_plan_marks_drains_and_adds_starting() -> None:
    replicas = [idle("a", 1.0), idle("b", 2.0)]
    p = plan(1, replicas, NOW_S)
    after = apply_plan(replicas, p, [])
    assert [(r.id, r.state) for r in after] == [("a", W.DRAINING), ("b", W.IDLE)]
    grown = apply_plan(replicas, plan(3, replicas, NOW_S), ["n"])
    assert grown[-1] == ReplicaInfo("n", W.STARTING, H.PENDING)


# --- properties -------------------------------------------------------------------------------------

replica_strategy = st.builds(
    ReplicaInfo,
    id=st.just(""),  # replaced by a unique id below
    state=st.sampled_from(list(WorkerState)),
    health=st.sampled_from(list(HealthState)),
    jobs_held=st.integers(0, 4),
    idle_since_s=st.one_of(st.none(), st.floats(0.0, NOW_S)),
    node_draining=st.booleans(),
    pending_placement=st.booleans(),
)
pools = st.lists(replica_strategy, max_size=12).map(
    lambda rs: [ReplicaInfo(f"r{i}", *_fields(r)) for i, r in enumerate(rs)]
)
policies = st.builds(PoolPolicy, max_in_flight_starts=st.one_of(st.none(), st.integers(1, 4)))


def _fields(r: ReplicaInfo) -> tuple[WorkerState, HealthState, int, float | None, bool, bool]:
    return (r.state, r.health, r.jobs_held, r.idle_since_s, r.node_draining, r.pending_placement)


def _capacity(replicas: Sequence[ReplicaInfo]) -> list[ReplicaInfo]:
    return [r for r in replicas if is_active(r.state) and r.health is not H.EVICTED and not r.node_draining]


@settings(max_examples=400, deadline=None)
@given(desired=st.integers(0, 10), replicas=pools, policy=policies)
def test_plan_properties(desired: int, replicas: list[ReplicaInfo], policy: PoolPolicy) -> None:
    p = plan(desired, replicas, NOW_S, policy)
    capacity = _capacity(replicas)
    by_id = {r.id: r for r in replicas}
    drained = [by_id[i] for i in p.to_drain]
    broken = [r for r in replicas if is_active(r.state) and r not in capacity]

    assert len(set(p.to_drain)) == len(p.to_drain)
    assert all(is_active(r.state) for r in drained)  # never re-drains a leaving replica
    assert set(p.to_replace) <= {r.id for r in broken}
    assert {r.id for r in broken} <= set(p.to_drain)  # broken ones always go
    # Never drains more than needed: the scale-down drains are exactly the excess, never when starting.
    scale_down = [r for r in drained if r in capacity]
    assert len(scale_down) == max(0, len(capacity) - desired)
    assert not (scale_down and p.to_start)
    # Never starts when capacity already meets desired; never starts more than the shortfall.
    if len(capacity) >= desired:
        assert p.to_start == 0
    assert p.to_start <= max(0, desired - len(capacity))
    assert len(p.to_replace) <= p.to_start
    if policy.max_in_flight_starts is not None:
        in_flight = sum(1 for r in capacity if r.pending_placement or r.state is W.STARTING)
        assert p.to_start + in_flight <= max(policy.max_in_flight_starts, in_flight)
    else:
        assert len(capacity) + p.to_start - len(scale_down) == desired
    # Busy replicas are drained only when every idle or starting one is already drained.
    if any(r.jobs_held for r in scale_down if r.state is not W.STARTING and not r.pending_placement):
        assert all(r in scale_down for r in capacity if r.jobs_held == 0)
    # Idempotent: the plan on its own result changes nothing.
    after = apply_plan(replicas, p, [f"n{i}" for i in range(p.to_start)])
    assert plan(desired, after, NOW_S, policy).is_noop
    if policy.max_in_flight_starts is None:
        assert len(_capacity(after)) == desired
    assert plan(desired, replicas, NOW_S, policy) == p  # deterministic
