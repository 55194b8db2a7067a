"""The worker registry: derived and reported states, stale and lost workers, restore grace, persistence."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.registry import PERSIST_EVERY_S, WorkerRegistry

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
    r.touch("w1", "ep", "replica", now_s=130.0)
    assert r.view("w1")["kind"] == "replica" and r.view("w1")["lastHeartbeatAt"] == 130_000


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


def test_draining_then_reported_state_wins() -> None:
    r = reg()
    r.touch("w1", "ep", None, 0.0)
    assert not r.is_draining("w1") and not r.is_draining("nobody")
    r.drain("w1", 1.0)
    assert r.is_draining("w1") and r.view("w1")["state"] == "draining"
    r.hold("w1", "ep", "j1", 1.0)
    assert r.view("w1")["state"] == "draining", "a draining worker finishing its jobs is still draining"
    r.touch("w2", "ep", "replica", 0.0, {"state": "starting", "gpu": "A100", "jobs": ["x"]})
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
    r.touch("w1", "ep", "replica", 0.0, {"state": "busy"})
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
    old.touch("w1", "ep", "replica", 0.0, {"state": "busy", "health": "healthy"})
    old.touch("w2", "ep", None, 0.0)
    old.touch("w3", "ep", None, 0.0)
    old.mark_lost("w3", 5.0)
    saved, _ = old.dirty(5.0)

    r = reg()
    r.restore(saved, draining={"w2"}, now_s=1_000.0)
    assert r.view("w1")["state"] == "busy" and r.view("w1")["kind"] == "replica"
    assert r.view("w1")["firstSeenAt"] == 0
    assert r.view("w2")["state"] == "draining" and r.is_draining("w2")
    assert r.view("w3")["state"] == "stopped"
    assert r.stale(1_000.0 + HB_S) == [], "no worker is lost the moment the queue restarts"
    assert sorted(r.stale(1_000.0 + HB_S + 1)) == ["w1", "w2"]
    assert r.dirty(1_000.0) == ({}, ["w3"]), "live records not rewritten at once; long-lost ones forgotten"


def test_health_counts_per_endpoint() -> None:
    r = reg()
    r.touch("idle", "ep", None, 0.0)
    r.hold("busy", "ep", "j1", 0.0)
    r.touch("start", "ep", "replica", 0.0, {"state": "starting"})
    r.touch("drain", "ep", None, 0.0)
    r.drain("drain", 0.0)
    r.touch("sick", "ep", "replica", 0.0, {"state": "idle", "health": "quarantined"})
    r.touch("gone", "ep", "replica", 0.0, {"state": "idle", "health": "evicted"})
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
