"""A pool's replica summaries as the autoscaler's policy sees them (``snapshot.replica_state``)."""

from __future__ import annotations

import pytest

from orchestrator.core.autoscale.model import REPLICA_STATES
from orchestrator.core.autoscale.snapshot import replica_state, replica_view
from orchestrator.core.health import HealthState
from orchestrator.core.workers import WorkerState

pytestmark = pytest.mark.timeout(30)

EXPECTED = {
    # state: (healthy, unhealthy)
    WorkerState.STARTING: ("starting", "unhealthy"),
    WorkerState.IDLE: ("idle", "unhealthy"),
    WorkerState.BUSY: ("busy", "unhealthy"),
    WorkerState.DRAINING: ("draining", "draining"),  # leaving: its health no longer matters
    WorkerState.STOPPED: ("draining", "draining"),  # listed until Ray releases its GPUs: still leaving
}


@pytest.mark.parametrize("state", list(WorkerState))
@pytest.mark.parametrize("health", list(HealthState))
def test_every_state_and_health_has_a_policy_state(state: WorkerState, health: HealthState) -> None:
    sick = health in (HealthState.QUARANTINED, HealthState.EVICTED)
    got = replica_state({"state": state.value, "health": health.value})
    assert got == EXPECTED[state][sick] and got in REPLICA_STATES


def test_missing_and_unknown_states() -> None:
    assert replica_state({}) == "starting"
    assert replica_state({"state": "zombie"}) == "idle"
    assert replica_state({"state": "zombie", "health": "evicted"}) == "unhealthy"
    v = replica_view({"id": "r1", "state": "busy", "health": "healthy", "jobsHeld": 2, "idleSince": None})
    assert (v.id, v.state, v.jobs_held, v.idle_since_s) == ("r1", "busy", 2, None)
