"""Worker lifecycle: every edge of the table, the one door, jobs, heartbeats, JSON."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.errors import Conflict
from orchestrator.core.health import HealthRecord, HealthState, on_failure, on_success
from orchestrator.core.history import HISTORY_LIMIT
from orchestrator.core.workers import (
    INITIAL_STATES,
    TRANSITIONS,
    InvalidWorkerTransition,
    JobsNotAccepted,
    WorkerChange,
    WorkerRecord,
    WorkerState,
    accepts_jobs,
    can_take_jobs,
    count_state,
    free_slots,
    heartbeat,
    heartbeat_overdue,
    is_active,
    is_heartbeat_stale,
    is_live,
    is_record_unhealthy,
    is_start_overdue,
    is_terminal,
    is_unhealthy,
    new_worker,
    parse_health,
    parse_state,
    record_jobs,
    start_overdue,
    stopped_at_s,
    transition,
    view_count_state,
    view_heartbeat_overdue,
    view_is_active,
    view_is_live,
    view_is_unhealthy,
    view_start_overdue,
    with_jobs,
)

pytestmark = pytest.mark.timeout(60)

HEALTHY = HealthRecord(state=HealthState.HEALTHY, established=True)
LEGAL = sorted((a, b) for a in WorkerState for b in TRANSITIONS[a])
ILLEGAL = sorted((a, b) for a, b in product(WorkerState, WorkerState) if b not in TRANSITIONS[a])


def record_in(
    state: WorkerState,
    *,
    jobs: frozenset[str] = frozenset(),
    concurrency: int = 1,
    health: HealthRecord = HEALTHY,
    now_s: float = 100.0,
) -> WorkerRecord:
    rec = new_worker("w1", "ep", "ray", now_s, concurrency=concurrency, health=health, node_id="n1")
    return replace(rec, state=state, jobs=jobs)


def test_every_state_has_a_row_and_wire_value() -> None:
    assert set(TRANSITIONS) == set(WorkerState)
    for state in WorkerState:
        assert state.value == state.name.lower()
        assert WorkerState(state.value) is state
        assert TRANSITIONS[state] <= set(WorkerState)


def test_every_state_is_reachable_from_an_initial_state() -> None:
    seen = set(INITIAL_STATES)
    frontier = list(INITIAL_STATES)
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()] - seen:
            seen.add(nxt)
            frontier.append(nxt)
    assert seen == set(WorkerState)


def test_every_live_state_can_stop_and_drain() -> None:
    """A dead worker goes to STOPPED from anywhere; a drain can start from any state not leaving."""
    for state in WorkerState:
        if not is_terminal(state):
            assert WorkerState.STOPPED in TRANSITIONS[state]
        if is_active(state):
            assert WorkerState.DRAINING in TRANSITIONS[state]
    assert {s for s in WorkerState if is_active(s)} == {
        WorkerState.STARTING,
        WorkerState.IDLE,
        WorkerState.BUSY,
    }


@pytest.mark.parametrize(("from_state", "to_state"), LEGAL)
def test_legal_edge(from_state: WorkerState, to_state: WorkerState) -> None:
    jobs = frozenset({"j1"}) if to_state is WorkerState.BUSY else frozenset()
    rec = record_in(from_state, jobs=jobs)
    out = transition(rec, to_state, 130.0, "because")
    assert out.state is to_state
    assert out.reason == "because"
    assert out.history[-1] == WorkerChange(130.0, from_state, to_state, "because")
    assert len(out.history) == len(rec.history) + 1
    assert out.jobs == rec.jobs
    assert rec.state is from_state  # the input is a value, untouched


@pytest.mark.parametrize(("from_state", "to_state"), ILLEGAL)
def test_illegal_edge(from_state: WorkerState, to_state: WorkerState) -> None:
    rec = record_in(from_state, jobs=frozenset({"j1"}) if to_state is WorkerState.BUSY else frozenset())
    with pytest.raises(InvalidWorkerTransition) as info:
        transition(rec, to_state, 130.0, "because")
    assert isinstance(info.value, ValueError)
    assert (info.value.from_state, info.value.to_state) == (from_state, to_state)
    assert from_state.value in str(info.value) and to_state.value in str(info.value)


def test_the_designed_lifecycle_is_in_the_table() -> None:
    s = WorkerState
    required = {
        (s.STARTING, s.IDLE),
        (s.IDLE, s.BUSY),
        (s.BUSY, s.IDLE),
        (s.IDLE, s.DRAINING),
        (s.BUSY, s.DRAINING),
        (s.DRAINING, s.STOPPED),
    }
    assert required <= set(LEGAL)
    assert not TRANSITIONS[s.STOPPED] and TRANSITIONS[s.DRAINING] == {s.STOPPED}


def test_self_transitions_are_illegal() -> None:
    assert all(s not in TRANSITIONS[s] for s in WorkerState)


def test_idle_and_busy_must_agree_with_jobs_held() -> None:
    with pytest.raises(InvalidWorkerTransition, match="holds 1 job"):
        transition(record_in(WorkerState.BUSY, jobs=frozenset({"j"})), WorkerState.IDLE, 1.0, "x")
    with pytest.raises(InvalidWorkerTransition, match="holds no job"):
        transition(record_in(WorkerState.IDLE), WorkerState.BUSY, 1.0, "x")
    with pytest.raises(InvalidWorkerTransition, match="holds 1 job"):
        transition(record_in(WorkerState.STARTING, jobs=frozenset({"j"})), WorkerState.IDLE, 1.0, "x")


def test_predicates_follow_the_table() -> None:
    assert [s for s in WorkerState if is_terminal(s)] == [WorkerState.STOPPED]
    assert {s for s in WorkerState if accepts_jobs(s)} == {WorkerState.IDLE, WorkerState.BUSY}
    for state in WorkerState:
        assert is_terminal(state) == (not TRANSITIONS[state])


def test_cold_start_is_timed_when_leaving_starting_for_idle() -> None:
    rec = new_worker("w1", "ep", "ray", 100.0)
    assert rec.state is WorkerState.STARTING and rec.cold_start_s is None
    assert transition(rec, WorkerState.DRAINING, 140.0, "drain").cold_start_s is None
    ready = transition(rec, WorkerState.IDLE, 142.5, "handler loaded")
    assert ready.cold_start_s == pytest.approx(42.5)
    busy = with_jobs(replace(ready, health=HEALTHY), {"j"}, 150.0)
    assert busy.cold_start_s == pytest.approx(42.5)


def test_history_keeps_the_last_fifty() -> None:
    rec = record_in(WorkerState.IDLE, concurrency=1)
    for i in range(60):
        rec = with_jobs(rec, {f"j{i}"}, float(i))
        rec = with_jobs(rec, set(), float(i) + 0.5)
    assert len(rec.history) == HISTORY_LIMIT
    assert rec.history[-1] == WorkerChange(59.5, WorkerState.BUSY, WorkerState.IDLE, "holds no job")
    assert rec.history[0].at_s == 35.0  # 120 changes made, the first 70 dropped


def test_with_jobs_moves_idle_busy_both_ways() -> None:
    rec = record_in(WorkerState.IDLE, concurrency=3)
    busy = with_jobs(rec, {"a", "b"}, 1.0)
    assert busy.state is WorkerState.BUSY and busy.jobs == {"a", "b"}
    still_busy = with_jobs(busy, {"b", "c"}, 2.0)
    assert still_busy.state is WorkerState.BUSY and len(still_busy.history) == len(busy.history)
    idle = with_jobs(still_busy, [], 3.0)
    assert idle.state is WorkerState.IDLE and idle.jobs == frozenset()
    assert with_jobs(idle, (), 4.0) is idle


@pytest.mark.parametrize("state", list(WorkerState))
def test_free_slots_by_state(state: WorkerState) -> None:
    rec = record_in(state, concurrency=3, jobs=frozenset({"a"}) if state is WorkerState.BUSY else frozenset())
    expected = {WorkerState.IDLE: 3, WorkerState.BUSY: 2}.get(state, 0)
    assert free_slots(rec, 0.0) == expected
    assert can_take_jobs(rec, 0.0) == (expected > 0)


def test_health_limits_slots() -> None:
    pending = record_in(WorkerState.IDLE, concurrency=4, health=HealthRecord())
    assert free_slots(pending, 0.0) == 1  # its first job is its check
    quarantined = replace(pending, health=on_failure(HEALTHY, 10.0))
    assert free_slots(quarantined, 10.5) == 0
    assert free_slots(quarantined, 11.0) == 1  # quarantine over: one probation job
    healthy = replace(pending, health=on_success(HealthRecord(), 0.0))
    assert free_slots(healthy, 0.0) == 4


def test_with_jobs_refuses_new_jobs_without_free_slots() -> None:
    full = record_in(WorkerState.BUSY, concurrency=2, jobs=frozenset({"a", "b"}))
    with pytest.raises(JobsNotAccepted, match="cannot take 1 new job"):
        with_jobs(full, {"a", "b", "c"}, 1.0)
    assert with_jobs(full, {"a", "c"}, 1.0).jobs == {"a", "c"}  # b finished, c took its slot
    assert with_jobs(full, {"a"}, 1.0).jobs == {"a"}  # dropping is always allowed
    idle = record_in(WorkerState.IDLE, concurrency=2)
    with pytest.raises(JobsNotAccepted):
        with_jobs(idle, {"a", "b", "c"}, 1.0)


@pytest.mark.parametrize("state", [s for s in WorkerState if not accepts_jobs(s)])
def test_states_that_take_no_jobs_refuse_and_keep_their_state(state: WorkerState) -> None:
    rec = record_in(state, concurrency=3, jobs=frozenset({"a", "b"}) if not is_active(state) else frozenset())
    with pytest.raises(JobsNotAccepted):
        with_jobs(rec, rec.jobs | {"new"}, 1.0)
    if rec.jobs:
        dropped = with_jobs(rec, {"a"}, 1.0)
        assert dropped.state is state and dropped.jobs == {"a"}
        assert with_jobs(dropped, (), 2.0).state is state


def test_draining_worker_finishes_then_stops() -> None:
    rec = with_jobs(record_in(WorkerState.IDLE, concurrency=2), {"a", "b"}, 1.0)
    rec = transition(rec, WorkerState.DRAINING, 2.0, "scale down")
    assert not can_take_jobs(rec, 2.0)
    rec = with_jobs(rec, {"b"}, 3.0)
    rec = with_jobs(rec, (), 4.0)
    assert rec.state is WorkerState.DRAINING
    rec = transition(rec, WorkerState.STOPPED, 5.0, "drained")
    assert [(h.from_state, h.to_state) for h in rec.history] == [
        (WorkerState.IDLE, WorkerState.BUSY),
        (WorkerState.BUSY, WorkerState.DRAINING),
        (WorkerState.DRAINING, WorkerState.STOPPED),
    ]


def test_heartbeat_staleness() -> None:
    rec = record_in(WorkerState.IDLE, now_s=100.0)
    assert rec.last_heartbeat_s == 100.0
    assert not is_heartbeat_stale(rec, 160.0, 60.0)
    assert is_heartbeat_stale(rec, 160.001, 60.0)
    rec = heartbeat(rec, 150.0)
    assert not is_heartbeat_stale(rec, 200.0, 60.0)
    assert heartbeat(rec, 120.0) is rec  # a late, older beat changes nothing
    stopped = replace(rec, state=WorkerState.STOPPED)
    assert not is_heartbeat_stale(stopped, 10_000.0, 60.0)


def test_start_overdue_only_while_starting() -> None:
    rec = new_worker("w1", "ep", "ray", 0.0)
    assert not is_start_overdue(rec, 300.0, 300.0)
    assert is_start_overdue(rec, 300.5, 300.0)
    assert not is_start_overdue(transition(rec, WorkerState.IDLE, 1.0, "ready"), 1000.0, 300.0)


def test_new_worker_validates() -> None:
    ext = new_worker("pod-1", "ep", "external", 5.0, state=WorkerState.IDLE, concurrency=2)
    assert (
        ext.state is WorkerState.IDLE and ext.health.state is HealthState.PENDING and ext.jobs == frozenset()
    )
    assert ext.reason == "registered" and ext.started_s == ext.last_heartbeat_s == 5.0
    with pytest.raises(ValueError, match="draining"):
        new_worker("w", "ep", "ray", 0.0, state=WorkerState.DRAINING)
    with pytest.raises(ValueError, match="'pod'"):
        new_worker("w", "ep", "pod", 0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"concurrency \(0\)"):
        new_worker("w", "ep", "ray", 0.0, concurrency=0)


def test_json_round_trip_and_keys() -> None:
    rec = new_worker("w1", "ep", "ray", 100.0, concurrency=2, node_id="node-a")
    rec = transition(rec, WorkerState.IDLE, 130.0, "handler loaded")
    rec = replace(rec, health=on_failure(on_success(rec.health, 131.0), 140.0))
    rec = heartbeat(rec, 141.0)
    data = rec.to_dict()
    assert set(data) == {
        "workerId",
        "endpoint",
        "kind",
        "state",
        "health",
        "concurrency",
        "jobs",
        "startedAt",
        "lastHeartbeatAt",
        "coldStartS",
        "nodeId",
        "reason",
        "history",
    }
    assert data["state"] == "idle" and data["coldStartS"] == 30.0 and data["health"]["state"] == "quarantined"
    assert WorkerRecord.from_dict(json.loads(json.dumps(data))) == rec


def test_from_dict_names_missing_key() -> None:
    data = new_worker("w1", "ep", "ray", 0.0).to_dict()
    del data["nodeId"]
    with pytest.raises(ValueError, match="nodeId"):
        WorkerRecord.from_dict(data)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("to"), st.sampled_from(list(WorkerState))),
        st.tuples(st.just("jobs"), st.frozensets(st.sampled_from("abcd"), max_size=4)),
        st.tuples(st.just("health"), st.booleans()),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ops=OPS, concurrency=st.integers(1, 3), initial=st.sampled_from(sorted(INITIAL_STATES)))
def test_any_sequence_keeps_the_invariants(
    ops: list[tuple[str, object]], concurrency: int, initial: WorkerState
) -> None:
    rec = new_worker("w", "ep", "ray", 0.0, concurrency=concurrency, state=initial)
    for step, (op, arg) in enumerate(ops):
        now_s = float(step)
        try:
            if op == "to":
                assert isinstance(arg, WorkerState)
                rec = transition(rec, arg, now_s, "test")
            elif op == "jobs":
                assert isinstance(arg, frozenset)
                rec = with_jobs(rec, arg, now_s)
            else:
                rec = replace(rec, health=(on_success if arg else on_failure)(rec.health, now_s))
        except (InvalidWorkerTransition, JobsNotAccepted):
            pass
        assert (rec.state is WorkerState.IDLE) <= (not rec.jobs)
        assert (rec.state is WorkerState.BUSY) <= bool(rec.jobs)
        assert (rec.state is WorkerState.STARTING) <= (not rec.jobs)
        assert len(rec.jobs) <= concurrency
        assert all(h.to_state in TRANSITIONS[h.from_state] for h in rec.history)
        assert len(rec.history) <= HISTORY_LIMIT
        assert WorkerRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


# The shared predicates, on records and on wire views ---------------------------------------------------


@pytest.mark.parametrize("state", list(WorkerState))
@pytest.mark.parametrize("health", list(HealthState))
def test_unhealthy_means_live_and_quarantined_or_evicted(state: WorkerState, health: HealthState) -> None:
    expected = state is not WorkerState.STOPPED and health in (HealthState.QUARANTINED, HealthState.EVICTED)
    assert is_unhealthy(state, health) == expected
    assert count_state(state, health) == ("quarantined" if expected else state.value)
    view = {"state": state.value, "health": health.value}
    assert view_is_unhealthy(view) == expected and view_count_state(view) == count_state(state, health)
    assert view_is_live(view) == is_live(state) == (state is not WorkerState.STOPPED)
    assert view_is_active(view) == is_active(state)
    rec = replace(record_in(state), health=HealthRecord(state=health, quarantined_until_s=1e9))
    assert is_record_unhealthy(rec) == expected


def test_views_with_unknown_or_missing_fields() -> None:
    assert parse_state("zombie") is None and parse_state(None) is None and parse_state(3) is None
    assert parse_health("sick") is None and parse_health("evicted") is HealthState.EVICTED
    assert view_count_state({"state": "zombie", "health": "evicted"}) == "quarantined"  # live: unknown
    assert view_count_state({"state": "zombie"}) == "zombie" and view_count_state({}) == "idle"
    assert view_is_live({}) and view_is_active({"state": "zombie"}) and not view_is_unhealthy({})


@pytest.mark.parametrize("state", list(WorkerState))
def test_overdue_predicates_agree_on_records_and_views(state: WorkerState) -> None:
    rec = replace(record_in(state, now_s=100.0), health=HEALTHY)
    view = {"state": state.value, "firstSeenAt": 100_000, "lastHeartbeatAt": 100_000}
    for now_s in (159.0, 160.0, 160.5):
        stale = is_heartbeat_stale(rec, now_s, 60.0)
        assert (
            stale == heartbeat_overdue(state, 100.0, now_s, 60.0) == view_heartbeat_overdue(view, now_s, 60.0)
        )
        assert stale == (state is not WorkerState.STOPPED and now_s > 160.0)
        overdue = is_start_overdue(rec, now_s, 60.0)
        assert overdue == start_overdue(state, 100.0, now_s, 60.0) == view_start_overdue(view, now_s, 60.0)
        assert overdue == (state is WorkerState.STARTING and now_s > 160.0)
    assert not view_heartbeat_overdue({"state": "idle"}, 1e9, 60.0), "no heartbeat time: nothing to judge"
    assert not view_start_overdue({"state": "starting"}, 1e9, 60.0)


def test_record_jobs_records_leases_without_a_slot_check() -> None:
    starting = new_worker("w1", "ep", "ray", 0.0)
    busy = record_jobs(starting, {"a", "b", "c"}, 2.0)  # more than its concurrency: a fact, not a choice
    assert busy.state is WorkerState.BUSY and busy.jobs == {"a", "b", "c"} and busy.cold_start_s == 2.0
    assert [(h.from_state, h.to_state) for h in busy.history] == [
        (WorkerState.STARTING, WorkerState.IDLE),
        (WorkerState.IDLE, WorkerState.BUSY),
    ]
    draining = transition(busy, WorkerState.DRAINING, 3.0, "drain")
    assert record_jobs(draining, {"a", "d"}, 4.0).state is WorkerState.DRAINING
    stopped = transition(draining, WorkerState.STOPPED, 5.0, "lost")
    assert stopped_at_s(stopped) == 5.0 and stopped_at_s(draining) is None
    assert record_jobs(stopped, {"a"}, 6.0).jobs == {"a"}  # dropping is always allowed
    with pytest.raises(JobsNotAccepted, match="stopped"):
        record_jobs(stopped, {"a", "z"}, 6.0)
    assert record_jobs(stopped, stopped.jobs, 6.0) is stopped


def test_errors_are_conflicts_that_pickle() -> None:
    err = InvalidWorkerTransition("w1", WorkerState.STOPPED, WorkerState.IDLE, "gone")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, Conflict) and isinstance(copy, ValueError) and copy.status_code == 409
    assert str(copy) == str(err) == "worker w1: stopped -> idle is not allowed (gone)"
    assert copy.detail == {"workerId": "w1", "from": "stopped", "to": "idle"}
    jobs = pickle.loads(pickle.dumps(JobsNotAccepted("full")))
    assert isinstance(jobs, Conflict) and str(jobs) == "full"
