"""A pool's replica summaries as the autoscaler's policy sees them (``snapshot.replica_state``)."""

from __future__ import annotations

import pytest

from orchestrator.core.autoscale import AutoscaleConfig, AutoscalerState, ScaleUp, decide
from orchestrator.core.autoscale.model import REPLICA_STATES
from orchestrator.core.autoscale.snapshot import build_snapshot, replica_state, replica_view
from orchestrator.core.health import HealthState
from orchestrator.core.models import EndpointSpec
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


def test_a_slot_held_by_a_stopped_jobs_code_counts_as_running() -> None:
    """A cancelled job's code still running holds its replica's only slot: a queued job needs a second
    replica, as if that job still ran (before, the policy saw an idle replica and added none)."""
    spec = EndpointSpec.model_validate({"name": "ep", "handler": "m:f", "gpus": 1, "maxReplicas": 3})
    replica = {"id": "r1", "state": "idle", "health": "healthy", "jobsHeld": 0, "idleSince": 0.0}

    def ups(held_by_stopped: int) -> int:
        pool = {"replicas": [{**replica, "heldByStopped": held_by_stopped}]}
        snapshot = build_snapshot(
            10.0,
            {"ep": spec},
            {"ep": {"queued": 1, "oldestQueuedAgeS": 5.0}},
            {"ep": pool},
            gpus_total=4,
            gpus_available=3,
            max_gpus=None,
            enabled=True,
            config=AutoscaleConfig(),
        )
        assert snapshot.endpoints[0].running == held_by_stopped
        decisions, _ = decide(snapshot, AutoscalerState())
        return sum(d.count for d in decisions if isinstance(d, ScaleUp))

    assert ups(0) == 0, "the idle replica takes the job"
    assert ups(1) == 1
