"""The worker registry: derived and reported states through the one door, stale and lost workers, restore
grace, persistence."""

from __future__ import annotations

import json
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.errors import Conflict
from orchestrator.core.health import HealthState
from orchestrator.core.registry import PERSIST_EVERY_S, WorkerRegistry
from orchestrator.core.workers import (
    TRANSITIONS,
    InvalidWorkerTransition,
    WorkerState,
    can_take_jobs,
    full_by_stopped_code,
    is_record_unhealthy,
)

pytestmark = pytest.mark.timeout(30)

HB_S = 60.0


def reg() -> WorkerRegistry:
    return WorkerRegistry(heartbeat_timeout_s=HB_S, retention_s=600.0)


def test_first_sign_of_life_registers_an_idle_outside_worker() -> None:
    r = reg()
    assert not r.exists("w1")
    r.touch("w1", "ep", None, now_s=100.0)
    v = r.view("w1")
    assert (v["workerId"], v["endpoint"], v["kind"], v["state"]) == ("w1", "ep", "external", "idle")
    assert (v["firstSeenAt"], v["lastHeartbeatAt"], v["jobs"], v["draining"]) == (100_000, 100_000, [], False)
    assert v["reason"] is None and v["health"] == "healthy"
    r.touch("w1", "ep", "ray", now_s=130.0)
    assert r.view("w1")["kind"] == "ray" and r.view("w1")["lastHeartbeatAt"] == 130_000


def test_busy_while_holding_jobs() -> None:
    r = reg()
    r.hold("w1", "ep", "j2", now_s=1.0)  # a take registers the worker too
    r.hold("w1", "ep", "j1", now_s=1.0)
    assert r.view("w1")["state"] == "busy" and r.held("w1") == ["j1", "j2"]
    r.release("w1", "j1")
    r.release("w1", "unknown")
    r.release("nobody", "j2")
    assert r.held("w1") == ["j2"]
    r.release("w1", "j2")
    assert r.view("w1")["state"] == "idle" and r.held("nobody") == []


def test_slots_held_by_stopped_jobs_code_are_not_free() -> None:
    """A replica reports the slots its stopped jobs' code still holds (it holds no job for them)."""
    r = reg()
    report = {"state": "idle", "health": "healthy", "concurrency": 2, "heldByStopped": 1}
    r.touch("w1", "ep", "ray", 1.0, report)
    assert r.has_free_worker("ep") and not full_by_stopped_code(r.view("w1"))
    r.touch("w1", "ep", "ray", 2.0, {**report, "heldByStopped": 2})
    assert not r.has_free_worker("ep") and full_by_stopped_code(r.view("w1"))
    assert r.view("w1")["state"] == "idle", "as far as jobs go"
    r.touch("w1", "ep", "ray", 3.0, {**report, "heldByStopped": 0})
    assert r.has_free_worker("ep") and not full_by_stopped_code(r.view("w1"))


def test_draining_then_reported_state_wins() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    assert not r.is_draining("w1") and not r.is_draining("nobody")
    r.drain("w1", 1.0)
    assert r.is_draining("w1") and r.view("w1")["state"] == "draining"
    r.hold("w1", "ep", "j1", 1.0)
    assert r.view("w1")["state"] == "draining", "a draining worker finishing its jobs is still draining"
    r.touch("w2", "ep", "ray", 0.0, {"state": "starting", "gpu": "A100", "jobs": ["x"]})
    v = r.view("w2")
    assert v["state"] == "starting" and v["gpu"] == "A100"
    assert v["jobs"] == [], "reported fields never override the jobs the queue knows"


def test_stale_and_lost() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    r.hold("w1", "ep", "j1", 0.0)
    r.touch("w2", "ep", None, 50.0)
    assert r.stale(HB_S) == [], "exactly the timeout is not stale yet"
    assert r.stale(HB_S + 0.1) == ["w1"]
    r.mark_lost("w1", HB_S + 0.1)
    v = r.view("w1")
    assert (v["state"], v["reason"], v["jobs"]) == ("stopped", "heartbeat lost", [])
    assert r.stale(1000.0) == ["w2"], "a lost worker is not stale again"
    r.mark_lost("nobody", 1.0)
    r.touch("w1", "ep", None, 2000.0)
    assert r.view("w1")["state"] == "idle", "a lost worker that comes back is live again"


def test_reported_state_never_hides_a_lost_worker() -> None:
    r = reg()
    r.touch("w1", "ep", "ray", 0.0, {"state": "busy"})
    r.mark_lost("w1", 100.0)
    assert r.view("w1")["state"] == "stopped"
    assert r.health_counts("ep") == {
        "idle": 0,
        "running": 0,
        "initializing": 0,
        "draining": 0,
        "unhealthy": 0,
    }


def test_touch_on_another_endpoint_re_registers() -> None:
    r = reg()
    r.hold("w1", "a", "j1", 0.0)
    r.touch("w1", "b", None, 5.0)
    assert r.endpoint_of("w1") == "b" and r.view("w1")["firstSeenAt"] == 5_000


def test_dirty_persists_changes_once_then_heartbeats_periodically() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    changed, removed = r.dirty(0.0)
    assert set(changed) == {"w1"} and removed == []
    record = json.loads(changed["w1"])
    assert record == {
        "endpoint": "ep",
        "kind": "external",
        "firstSeenAt": 0,
        "lastSeenAt": 0,
        "reported": {},
        "lostAt": None,
        "state": "idle",
        "reason": "registered",
    }
    assert r.dirty(1.0) == ({}, []), "nothing changed"
    r.touch("w1", "ep", None, 2.0)
    assert r.dirty(2.0) == ({}, []), "a heartbeat alone is saved only every few seconds"
    later = PERSIST_EVERY_S + 0.5
    changed, _ = r.dirty(later)
    assert json.loads(changed["w1"])["lastSeenAt"] == 2_000
    r.touch("w1", "ep", None, later, {"state": "busy"})
    assert set(r.dirty(later)[0]) == {"w1"}, "a new report is saved at once"


def test_lost_workers_are_forgotten_after_retention() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    r.mark_lost("w1", 10.0)
    changed, _ = r.dirty(10.0)
    assert json.loads(changed["w1"])["lostAt"] == 10_000
    assert r.dirty(610.0) == ({}, []), "kept for the retention time"
    assert r.dirty(610.1) == ({}, ["w1"])
    assert not r.exists("w1") and r.views() == []
    assert r.dirty(700.0) == ({}, []), "removed once"


def test_restore_gives_one_heartbeat_timeout_of_grace() -> None:
    old = reg()
    old.touch("w1", "ep", "ray", 0.0, {"state": "busy", "health": "healthy"})
    old.hold("w1", "ep", "j1", 0.0)
    old.touch("w2", "ep", None, 0.0)
    old.touch("w3", "ep", None, 0.0)
    old.mark_lost("w3", 5.0)
    saved, _ = old.dirty(5.0)

    r = reg()
    r.restore(saved, draining={"w2"}, now_s=1_000.0)
    assert r.view("w1")["state"] == "idle", "jobs are not restored from the record: the leases say"
    assert r.view("w1")["kind"] == "ray" and r.view("w1")["health"] == "healthy"
    assert r.view("w1")["firstSeenAt"] == 0
    assert r.view("w2")["state"] == "draining" and r.is_draining("w2")
    assert r.view("w3")["state"] == "stopped"
    assert r.stale(1_000.0 + HB_S) == [], "no worker is lost the moment the queue restarts"
    assert sorted(r.stale(1_000.0 + HB_S + 1)) == ["w1", "w2"]
    assert r.dirty(1_000.0) == ({}, ["w3"]), "live records not rewritten at once; long-lost ones forgotten"
    r.hold("w1", "ep", "j1", 1_000.0)  # the queue re-holds its leases right after restoring
    assert r.view("w1")["state"] == "busy" and r.held("w1") == ["j1"]


def test_health_counts_per_endpoint() -> None:
    r = reg()
    r.touch("idle", "ep", None, 0.0)
    r.hold("busy", "ep", "j1", 0.0)
    r.touch("start", "ep", "ray", 0.0, {"state": "starting"})
    r.touch("drain", "ep", None, 0.0)
    r.drain("drain", 0.0)
    r.touch("sick", "ep", "ray", 0.0, {"state": "idle", "health": "quarantined"})
    r.touch("gone", "ep", "ray", 0.0, {"state": "idle", "health": "evicted"})
    r.touch("lost", "ep", None, 0.0)
    r.mark_lost("lost", 1.0)
    r.touch("elsewhere", "other", None, 0.0)
    assert r.health_counts("ep") == {
        "idle": 1,
        "running": 1,
        "initializing": 1,
        "draining": 1,
        "unhealthy": 2,
    }
    assert r.health_counts("other")["idle"] == 1
    assert [v["workerId"] for v in r.views("other")] == ["elsewhere"]
    assert len(r.views()) == 8
    counts = r.state_counts()
    assert counts[("ep", "idle")] == 3 and counts[("ep", "stopped")] == 1 and counts[("other", "idle")] == 1


# Every change through the one door --------------------------------------------------------------------


def history(r: WorkerRegistry, worker_id: str) -> list[tuple[str, str]]:
    return [(h["from"], h["to"]) for h in r.view(worker_id)["history"]]


def test_a_replica_lifecycle_through_the_table_with_its_history() -> None:
    r = reg()
    r.touch("w1", "ep", "ray", 0.0, {"state": "starting", "reason": "starting: loading handler"})
    assert r.view("w1")["state"] == "starting" and r.health_counts("ep")["initializing"] == 1
    r.touch("w1", "ep", "ray", 1.0, {"state": "idle", "health": "pending", "concurrency": 2})
    assert r.record("w1").state is WorkerState.IDLE and r.record("w1").concurrency == 2
    r.touch("w1", "ep", "ray", 1.5, {"state": "starting"})  # the pool's late report: stale, ignored
    r.hold("w1", "ep", "j1", 2.0)
    r.touch("w1", "ep", "ray", 2.5, {"state": "idle", "health": "healthy"})  # the leases say busy
    assert r.view("w1")["state"] == "busy"
    r.release("w1", "j1", 3.0)
    r.touch("w1", "ep", "ray", 4.0, {"state": "draining", "health": "healthy"})
    r.touch("w1", "ep", "ray", 4.5, {"state": "idle", "health": "healthy"})  # a drain is not undone
    assert r.is_draining("w1") and r.view("w1")["state"] == "draining"
    r.touch("w1", "ep", "ray", 5.0, {"state": "stopped", "reason": "drained"})
    r.mark_lost("w1", 5.0, "drained")
    v = r.view("w1")
    assert (v["state"], v["reason"], v["draining"]) == ("stopped", "drained", True)
    assert history(r, "w1") == [
        ("starting", "idle"),
        ("idle", "busy"),
        ("busy", "idle"),
        ("idle", "draining"),
        ("draining", "stopped"),
    ]
    assert [h["at"] for h in v["history"]] == [1_000, 2_000, 3_000, 4_000, 5_000]
    assert all(WorkerState(t) in TRANSITIONS[WorkerState(f)] for f, t in history(r, "w1"))


def test_every_state_appears_in_the_views() -> None:
    r = reg()
    r.touch("s", "ep", "ray", 0.0, {"state": "starting"})
    r.touch("i", "ep", None, 0.0)
    r.hold("b", "ep", "j1", 0.0)
    r.touch("d", "ep", None, 0.0)
    r.drain("d", 0.0)
    r.touch("x", "ep", None, 0.0)
    r.mark_lost("x", 0.0)
    assert {v["workerId"]: v["state"] for v in r.views("ep")} == {
        "s": "starting",
        "i": "idle",
        "b": "busy",
        "d": "draining",
        "x": "stopped",
    }
    assert {state for _, state in r.state_counts()} == {s.value for s in WorkerState}


def test_drain_is_idempotent_and_a_stopped_worker_cannot_drain() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    r.drain("w1", 1.0)
    r.drain("w1", 2.0)
    assert history(r, "w1") == [("idle", "draining")]
    r.mark_lost("w1", 3.0)
    r.mark_lost("w1", 4.0)  # already stopped: nothing changes
    assert history(r, "w1") == [("idle", "draining"), ("draining", "stopped")]
    with pytest.raises(InvalidWorkerTransition, match="stopped -> draining") as info:
        r.drain("w1", 5.0)
    assert isinstance(info.value, Conflict) and info.value.status_code == 409
    copy = pickle.loads(pickle.dumps(info.value))  # crosses Ray actor boundaries intact
    assert (copy.worker_id, copy.from_state, copy.to_state, str(copy)) == (
        "w1",
        WorkerState.STOPPED,
        WorkerState.DRAINING,
        str(info.value),
    )
    with pytest.raises(KeyError):
        r.drain("nobody", 5.0)


def test_a_starting_worker_that_takes_a_job_is_ready() -> None:
    r = reg()
    r.touch("w1", "ep", "ray", 0.0, {"state": "starting"})
    r.hold("w1", "ep", "j1", 3.0)
    assert r.view("w1")["state"] == "busy"
    assert history(r, "w1") == [("starting", "idle"), ("idle", "busy")]
    assert r.record("w1").cold_start_s == 3.0


def test_a_stopped_worker_is_registered_anew_and_a_stop_report_does_not_revive_it() -> None:
    r = reg()
    r.touch("w1", "ep", "ray", 0.0, {"state": "idle"})
    r.mark_lost("w1", 10.0)
    r.touch("w1", "ep", "ray", 11.0, {"state": "stopped", "reason": "died: OOM"})
    v = r.view("w1")
    assert (v["state"], v["reason"], v["firstSeenAt"]) == ("stopped", "died: OOM", 0)
    r.hold("w1", "ep", "j1", 20.0)  # it took a job: alive, a new record
    v = r.view("w1")
    assert (v["state"], v["firstSeenAt"], v["kind"], v["jobs"]) == ("busy", 20_000, "ray", ["j1"])
    assert history(r, "w1") == [("idle", "busy")]


def test_stop_reason_and_state_survive_a_restart() -> None:
    old = reg()
    old.touch("gone", "ep", "ray", 0.0, {"state": "idle", "reason": "serving"})
    old.mark_lost("gone", 5.0, "died: exit 137")
    old.touch("start", "ep", "ray", 0.0, {"state": "starting"})
    old.touch("drain", "ep", None, 0.0)
    old.drain("drain", 1.0)
    saved, _ = old.dirty(5.0)
    assert old.view("gone")["reason"] == "died: exit 137", "a live report's reason never hides the stop's"

    r = reg()
    r.restore(saved, draining=set(), now_s=100.0)
    assert {v["workerId"]: (v["state"], v["reason"]) for v in r.views()} == {
        "drain": ("draining", None),
        "gone": ("stopped", "died: exit 137"),
        "start": ("starting", None),
    }
    assert r.is_draining("drain"), "saved draining: drains on even without the store's drain set"
    legacy = json.dumps(
        {"endpoint": "ep", "firstSeenAt": 0, "reported": {"state": "starting"}, "lostAt": None}
    )
    r.restore({"old": legacy}, draining=set(), now_s=100.0)
    assert r.view("old")["state"] == "starting" and r.view("old")["kind"] == "external"


def test_reported_health_is_the_records_health() -> None:
    r = reg()
    r.touch("w1", "ep", "ray", 0.0, {"state": "idle", "health": "quarantined"})
    rec = r.record("w1")
    assert rec.health.state is HealthState.QUARANTINED
    assert is_record_unhealthy(rec) and r.view("w1")["health"] == "quarantined"
    assert not can_take_jobs(rec, 0.0)  # a reported quarantine's end is unknown: the next report says
    r.touch("w1", "ep", "ray", 1.0, {"state": "idle", "health": "healthy"})
    assert not is_record_unhealthy(r.record("w1")) and r.health_counts("ep")["idle"] == 1


OPS = st.lists(
    st.tuples(
        st.sampled_from(["touch", "report", "hold", "release", "drain", "lost", "restore"]),
        st.sampled_from(["w1", "w2"]),
        st.sampled_from(["starting", "idle", "busy", "draining", "stopped"]),
        st.sampled_from(["a", "b", "c"]),
    ),
    max_size=40,
)


def check_records(r: WorkerRegistry) -> None:
    for w in ("w1", "w2"):
        if not r.exists(w):
            continue
        rec = r.record(w)
        assert all(h.to_state in TRANSITIONS[h.from_state] for h in rec.history)
        serving = rec.state in (WorkerState.IDLE, WorkerState.BUSY)
        assert (rec.state is WorkerState.BUSY) == (bool(rec.jobs) and serving)
        assert rec.state not in (WorkerState.STARTING, WorkerState.STOPPED) or not rec.jobs
        assert r.view(w)["state"] == rec.state.value and r.view(w)["jobs"] == sorted(rec.jobs)


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_any_sequence_keeps_the_records_in_the_table(ops: list[tuple[str, str, str, str]]) -> None:
    r = reg()
    for step, (op, wid, state, job) in enumerate(ops):
        now_s = float(step)
        if op == "touch":
            r.touch(wid, "ep", None, now_s)
        elif op == "report":
            r.touch(wid, "ep", "ray", now_s, {"state": state})
        elif op == "hold":
            r.hold(wid, "ep", job, now_s)
        elif op == "release":
            r.release(wid, job, now_s)
        elif op == "drain" and r.exists(wid):
            try:
                r.drain(wid, now_s)
            except InvalidWorkerTransition:
                assert r.view(wid)["state"] == "stopped"
        elif op == "lost":
            r.mark_lost(wid, now_s)
        elif op == "restore":
            saved, _ = r.dirty(now_s)
            fresh = reg()
            fresh.restore(saved, draining=set(), now_s=now_s)
            for w in saved:
                assert fresh.view(w)["state"] in ("starting", "idle", "draining", "stopped")
        check_records(r)


def test_release_without_a_time_keeps_the_history_in_order() -> None:
    r = reg()
    r.touch("w1", "ep", None, 5.0)
    r.hold("w1", "ep", "j1", 10.0)
    r.release("w1", "j1")
    assert [h["at"] for h in r.view("w1")["history"]] == [10_000, 10_000]
