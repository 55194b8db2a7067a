"""Replica health: every edge, backoff schedules exactly, quarantine invariants, eviction, JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core import health as h
from orchestrator.core.health import (
    HEALTH_TRANSITIONS,
    PROBATION_STATES,
    SERVING_STATES,
    HealthChange,
    HealthPolicy,
    HealthRecord,
    HealthState,
    can_serve,
    on_failure,
    on_success,
    serving_slots,
    tick,
)
from orchestrator.core.history import HISTORY_LIMIT

pytestmark = pytest.mark.timeout(60)

S = HealthState
LEGAL = sorted((a, b) for a in S for b in HEALTH_TRANSITIONS[a])
ILLEGAL = sorted((a, b) for a, b in product(S, S) if b not in HEALTH_TRANSITIONS[a])


def quarantine_delays(
    rec: HealthRecord, failures: int, policy: HealthPolicy, start_s: float = 0.0
) -> list[float]:
    """Fails the replica as soon as it may serve again, ``failures`` times; returns each quarantine's length
    (or stops at eviction)."""
    delays: list[float] = []
    now_s = start_s
    for _ in range(failures):
        rec = on_failure(rec, now_s, policy)
        if rec.state is S.EVICTED:
            break
        assert rec.state is S.QUARANTINED and rec.quarantined_until_s is not None
        delays.append(rec.quarantined_until_s - now_s)
        now_s = rec.quarantined_until_s
        rec = tick(rec, now_s)
        assert rec.state is S.RECOVERING
    return delays


def established(now_s: float = 0.0) -> HealthRecord:
    return on_success(HealthRecord(), now_s)


def test_every_state_has_a_row_and_wire_value() -> None:
    assert set(HEALTH_TRANSITIONS) == set(S)
    for state in S:
        assert state.value == state.name.lower()
        assert HEALTH_TRANSITIONS[state] <= set(S)
    assert not HEALTH_TRANSITIONS[S.EVICTED]
    assert set(S) - SERVING_STATES == {S.QUARANTINED, S.EVICTED}
    assert {S.PENDING, S.RECOVERING} == PROBATION_STATES


def _explore() -> set[tuple[HealthState, HealthState]]:
    """Every state change the events can make, found by walking all event sequences from a new replica
    (deduplicated on the record, with small policies so eviction is reachable)."""
    seen_edges: set[tuple[HealthState, HealthState]] = set()
    for limit in (0, 2):
        policy = HealthPolicy(max_quarantines=limit)

        def fail(r: HealthRecord, t: float, policy: HealthPolicy = policy) -> HealthRecord:
            return on_failure(r, t, policy)

        seen: set[HealthRecord] = set()
        frontier = [(HealthRecord(), 0.0)]
        while frontier:
            rec, now_s = frontier.pop()
            key = replace(rec, history=(), quarantined_until_s=None, consecutive_failures=0)
            if key in seen:
                continue
            seen.add(key)
            later_s = now_s + 100.0  # past any quarantine
            steps = (
                (now_s, on_success),
                (now_s, fail),
                (later_s, tick),
                (later_s, on_success),
                (later_s, fail),
            )
            for at_s, event in steps:
                nxt = event(rec, at_s)
                seen_edges.update((c.from_state, c.to_state) for c in nxt.history[len(rec.history) :])
                frontier.append((nxt, at_s))
    return seen_edges


def test_events_make_exactly_the_edges_of_the_table() -> None:
    assert _explore() == set(LEGAL)


@pytest.mark.parametrize(("from_state", "to_state"), ILLEGAL)
def test_the_door_refuses_edges_outside_the_table(from_state: HealthState, to_state: HealthState) -> None:
    with pytest.raises(AssertionError):
        h._move(HealthRecord(state=from_state), to_state, 0.0, "x")


@pytest.mark.parametrize(("from_state", "to_state"), LEGAL)
def test_the_door_records_edges_of_the_table(from_state: HealthState, to_state: HealthState) -> None:
    out = h._move(HealthRecord(state=from_state), to_state, 3.0, "why")
    assert out.state is to_state and out.history == (HealthChange(3.0, from_state, to_state, "why"),)


def test_new_replica_backoff_schedule_exactly() -> None:
    policy = HealthPolicy(max_quarantines=8)
    assert quarantine_delays(HealthRecord(), 8, policy) == [0, 1, 1, 2, 5, 5, 5, 5]


def test_established_replica_backoff_schedule_exactly() -> None:
    policy = HealthPolicy(max_quarantines=8)
    assert quarantine_delays(established(), 8, policy) == [1, 2, 5, 10, 20, 20, 20, 20]


def test_default_policy_evicts_after_five_quarantines() -> None:
    assert quarantine_delays(HealthRecord(), 10, HealthPolicy()) == [0, 1, 1, 2, 5]
    rec = HealthRecord()
    now_s = 0.0
    for _ in range(5):
        rec = on_failure(rec, now_s)
        now_s = rec.quarantined_until_s or now_s
    rec = on_failure(rec, now_s)  # sixth failure in a row, after the fifth quarantine
    assert rec.state is S.EVICTED
    assert rec.consecutive_failures == 6 and rec.quarantined_until_s is None
    assert "5 quarantines" in rec.history[-1].reason


def test_zero_max_quarantines_evicts_on_first_failure() -> None:
    policy = HealthPolicy(max_quarantines=0)
    assert on_failure(HealthRecord(), 0.0, policy).state is S.EVICTED
    assert on_failure(established(), 0.0, policy).state is S.EVICTED


def test_evicted_is_absorbing() -> None:
    rec = on_failure(HealthRecord(), 0.0, HealthPolicy(max_quarantines=0))
    for now_s in (0.0, 1e6):
        assert on_success(rec, now_s) is rec
        assert on_failure(rec, now_s) is rec
        assert tick(rec, now_s) is rec
        assert not can_serve(rec, now_s) and serving_slots(rec, 4, now_s) == 0


def test_quarantine_is_never_cut_short() -> None:
    rec = on_failure(established(), 10.0)  # 1 s
    assert rec.quarantined_until_s == 11.0
    for now_s in (10.0, 10.5, 10.999):
        assert tick(rec, now_s) is rec
        assert on_success(rec, now_s).state is S.QUARANTINED  # an in-flight job that succeeded
        assert not can_serve(rec, now_s) and serving_slots(rec, 4, now_s) == 0
    assert tick(rec, 11.0).state is S.RECOVERING
    assert tick(rec, 11.0).quarantined_until_s is None


def test_failure_in_quarantine_counts_but_does_not_extend() -> None:
    rec = on_failure(established(), 10.0)
    again = on_failure(rec, 10.5)
    assert again.state is S.QUARANTINED
    assert again.quarantined_until_s == 11.0 and again.quarantine_count == 1
    assert again.consecutive_failures == 2
    assert again.history == rec.history


def test_recovering_needs_one_good_job_and_clears_counts() -> None:
    rec = tick(on_failure(established(), 10.0), 11.0)
    assert rec.state is S.RECOVERING and rec.quarantine_count == 1
    assert can_serve(rec, 11.0) and serving_slots(rec, 4, 11.0) == 1  # probation: one job
    healthy = on_success(rec, 12.0)
    assert healthy.state is S.HEALTHY
    assert (healthy.consecutive_failures, healthy.quarantine_count) == (0, 0)
    assert serving_slots(healthy, 4, 12.0) == 4
    # The count was cleared: the next failure starts the schedule again.
    assert on_failure(healthy, 20.0).quarantined_until_s == 21.0


def test_failure_in_recovering_goes_back_with_the_next_backoff() -> None:
    rec = tick(on_failure(established(), 10.0), 11.0)
    rec = on_failure(rec, 11.5)
    assert rec.state is S.QUARANTINED and rec.quarantine_count == 2
    assert rec.quarantined_until_s == 13.5  # 2 s, the second step


def test_pending_serves_one_job_as_its_check() -> None:
    rec = HealthRecord()
    assert rec.state is S.PENDING and not rec.established
    assert can_serve(rec, 0.0) and serving_slots(rec, 8, 0.0) == 1
    ok = on_success(rec, 1.0)
    assert ok.state is S.HEALTHY and ok.established
    assert ok.history == (HealthChange(1.0, S.PENDING, S.HEALTHY, "first check passed"),)
    bad = on_failure(rec, 1.0)
    assert bad.state is S.QUARANTINED and bad.quarantined_until_s == 1.0  # 0 s for a new replica
    assert can_serve(bad, 1.0)  # its 0 s quarantine is over at once: on probation


def test_events_tick_first() -> None:
    """An event after the deadline sees RECOVERING even if nobody ticked."""
    rec = on_failure(established(), 10.0)
    assert on_success(rec, 11.0).state is S.HEALTHY
    back = on_failure(rec, 11.0)
    assert back.state is S.QUARANTINED and back.quarantine_count == 2
    assert [c.to_state for c in back.history[-2:]] == [S.RECOVERING, S.QUARANTINED]


def test_success_when_healthy_clears_failures_only() -> None:
    rec = established()
    assert on_success(rec, 5.0) is rec
    odd = replace(rec, consecutive_failures=2)
    assert on_success(odd, 5.0).consecutive_failures == 0


def test_serving_slots_never_exceed_concurrency() -> None:
    assert serving_slots(HealthRecord(), 0, 0.0) == 0
    assert serving_slots(HealthRecord(), 1, 0.0) == 1


def test_history_keeps_the_last_fifty() -> None:
    rec = established()
    now_s = 0.0
    for _ in range(40):
        rec = on_failure(rec, now_s)
        now_s = rec.quarantined_until_s or now_s
        rec = on_success(rec, now_s)  # ticks to RECOVERING, then HEALTHY
    assert len(rec.history) == HISTORY_LIMIT
    assert rec.history[-1].to_state is S.HEALTHY


def test_policy_validation_echoes_the_value() -> None:
    with pytest.raises(ValueError, match=r"new_backoff_s \(\(\)\)"):
        HealthPolicy(new_backoff_s=())
    with pytest.raises(ValueError, match="-1"):
        HealthPolicy(established_backoff_s=(1.0, -1.0))
    with pytest.raises(ValueError, match="inf"):
        HealthPolicy(established_backoff_s=(float("inf"),))
    with pytest.raises(ValueError, match=r"max_quarantines \(-1\)"):
        HealthPolicy(max_quarantines=-1)
    with pytest.raises(ValueError, match="quarantine_number"):
        HealthPolicy().backoff_s(0, established=False)


def test_json_round_trip() -> None:
    rec = tick(on_failure(on_failure(established(), 1.0), 2.0), 2.5)
    rec = on_failure(rec, 1.0)
    data = json.loads(json.dumps(rec.to_dict()))
    assert set(data) == {
        "state",
        "consecutiveFailures",
        "quarantineCount",
        "quarantinedUntil",
        "established",
        "history",
    }
    assert HealthRecord.from_dict(data) == rec
    del data["quarantineCount"]
    with pytest.raises(ValueError, match="quarantineCount"):
        HealthRecord.from_dict(data)


EVENTS = st.lists(
    st.tuples(st.sampled_from(["ok", "fail", "tick"]), st.floats(0.0, 30.0, allow_nan=False)), max_size=60
)


@settings(max_examples=300, deadline=None)
@given(events=EVENTS, max_quarantines=st.integers(0, 6))
def test_any_event_sequence_keeps_the_invariants(
    events: list[tuple[str, float]], max_quarantines: int
) -> None:
    policy = HealthPolicy(max_quarantines=max_quarantines)
    rec = HealthRecord()
    now_s = 0.0
    for kind, gap_s in events:
        now_s += gap_s
        before = rec
        if kind == "ok":
            rec = on_success(rec, now_s)
        elif kind == "fail":
            rec = on_failure(rec, now_s, policy)
        else:
            rec = tick(rec, now_s)
        assert (rec.state is S.QUARANTINED) == (rec.quarantined_until_s is not None)
        assert rec.quarantine_count <= max_quarantines
        assert rec.established >= before.established
        assert all(c.to_state in HEALTH_TRANSITIONS[c.from_state] for c in rec.history)
        if before.state is S.EVICTED:
            assert rec is before
        until_s = before.quarantined_until_s
        if before.state is S.QUARANTINED and until_s is not None and now_s < until_s:  # never cut short
            assert rec.state is S.QUARANTINED
            assert rec.quarantined_until_s == until_s
        if rec.state is S.HEALTHY:
            assert rec.established and rec.quarantine_count == 0
    assert HealthRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


# Failed jobs count against a replica only when the last N all failed ---------------------------------


def test_failed_jobs_below_the_threshold_leave_the_state_alone() -> None:
    policy = HealthPolicy(failed_jobs_to_quarantine=3)
    healthy = on_success(HealthRecord(), 0.0)
    rec = h.on_job_failed(healthy, 1.0, policy)
    rec = h.on_job_failed(rec, 2.0, policy)
    assert rec.state is S.HEALTHY and rec.consecutive_failures == 2 and rec.history == healthy.history
    assert serving_slots(rec, 4, 2.0) == 4  # a bad input does not throttle the replica
    rec = on_success(rec, 3.0)
    assert rec.consecutive_failures == 0
    # A PENDING replica keeps its one probation slot until a job succeeds.
    pending = h.on_job_failed(HealthRecord(), 1.0, policy)
    assert pending.state is S.PENDING and serving_slots(pending, 4, 1.0) == 1


def test_the_nth_failed_job_in_a_row_quarantines_and_probation_fails_fast() -> None:
    policy = HealthPolicy(failed_jobs_to_quarantine=3)
    rec = on_success(HealthRecord(), 0.0)
    for k in range(3):
        rec = h.on_job_failed(rec, 1.0 + k, policy, detail="handler error")
    assert rec.state is S.QUARANTINED and rec.quarantined_until_s == 3.0 + 1.0
    assert "last 3 jobs failed (handler error)" in rec.history[-1].reason
    # On probation after it, one more failure is again "every one of the last N": quarantine 2, longer.
    rec = tick(rec, 4.0)
    assert rec.state is S.RECOVERING
    rec = h.on_job_failed(rec, 4.5, policy)
    assert rec.state is S.QUARANTINED and rec.quarantined_until_s == 4.5 + 2.0


def test_default_threshold_is_five_and_must_be_positive() -> None:
    assert h.DEFAULT_HEALTH_POLICY.failed_jobs_to_quarantine == 5
    rec = HealthRecord()
    for k in range(4):
        rec = h.on_job_failed(rec, float(k))
    assert rec.state is S.PENDING
    assert h.on_job_failed(rec, 5.0).state is S.QUARANTINED
    with pytest.raises(ValueError, match=r"failed_jobs_to_quarantine \(0\)"):
        HealthPolicy(failed_jobs_to_quarantine=0)


@given(st.lists(st.booleans(), max_size=40), st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_quarantine_only_after_n_failures_in_a_row(outcomes: list[bool], n: int) -> None:
    policy = HealthPolicy(failed_jobs_to_quarantine=n, max_quarantines=100)
    rec = HealthRecord()
    run = 0
    for k, ok in enumerate(outcomes):
        before = rec
        rec = on_success(rec, float(k)) if ok else h.on_job_failed(rec, float(k), policy)
        run = 0 if ok else run + 1
        if rec.state is S.QUARANTINED and before.state is not S.QUARANTINED:
            # N failed jobs in a row (a success that lands during a quarantine does not reset the count)
            assert rec.consecutive_failures >= n, "quarantined before N failed jobs in a row"
        if not ok and run >= n and before.state in SERVING_STATES:
            assert rec.state in (S.QUARANTINED, S.EVICTED)


def test_a_replica_that_does_not_answer_its_status_is_lost_only_when_it_is_wedged() -> None:
    live = {"loopRunning": True, "blockedS": 30.0, "held": 2, "stoppedWhileBlocked": 1}
    verdict = h.unanswered_verdict
    assert verdict(live, 0.0, 1.0, 8.0) is None  # blocked in a job that still runs: its leases hold
    assert verdict({**live, "blockedS": 3.0, "stoppedWhileBlocked": 2}, 0.0, 1.0, 8.0) is None  # just slow
    assert verdict({**live, "held": 0, "stoppedWhileBlocked": 0}, 0.0, 1.0, 8.0) is None
    assert verdict({**live, "stoppedWhileBlocked": 2}, 0.0, 1.0, 8.0) == (
        "hung: its event loop blocked 30 s in jobs stopped since; replaced",
        h.LOOP_BLOCKED,
    )
    assert verdict({**live, "loopRunning": False}, 0.0, 1.0, 8.0) == ("its event loop ended; replaced", None)
    assert verdict(None, 8.0, 1.0, 8.0) is None  # no answer at all, not for long yet
    assert verdict(None, 9.4, 1.0, 8.0) == ("unresponsive for 9 s; replaced", None)
    assert "asyncio.to_thread" in h.LOOP_BLOCKED


def test_the_keepalive_heartbeats_for_a_loop_only_once_it_missed_two_heartbeat_periods() -> None:
    assert not h.keepalive_due(0.0, 5.0)
    assert not h.keepalive_due(9.9, 5.0)  # a slow step: the loop ticks every half period
    assert h.keepalive_due(10.0, 5.0) and h.keepalive_due(120.0, 5.0)
