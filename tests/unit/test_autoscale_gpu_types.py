"""decide() with GPU types: each endpoint gets GPUs of its types only, falls back down its list, is not
helped by (and does not preempt) GPUs of other types, and says so when no node can ever offer its types."""

from __future__ import annotations

import pytest

from orchestrator.core.autoscale import (
    AutoscaleConfig,
    AutoscalerState,
    Blocked,
    Decision,
    Drain,
    EndpointView,
    ReplicaView,
    ScaleUp,
    Snapshot,
    decide,
)
from orchestrator.core.autoscale.snapshot import build_snapshot
from orchestrator.core.gpu_types import TypeCapacity
from orchestrator.core.models import EndpointSpec

pytestmark = pytest.mark.timeout(30)
EMPTY = AutoscalerState()


def ep(name: str, types: tuple[str, ...] | None, **kw: object) -> EndpointView:
    kw.setdefault("scale_up_cooldown_s", 0.0)
    kw.setdefault("scale_down_cooldown_s", 0.0)
    return EndpointView(name, gpu_types=types, **kw)  # type: ignore[arg-type]


def snap(
    *eps: EndpointView, by_type: dict[str, float], untyped: float = 0.0, growth: float = 0.0, **kw: object
) -> Snapshot:
    """``gpus_total`` is the typed GPUs, the untyped ones and the growth (as the autoscaler actor adds it)."""
    total = sum(by_type.values()) + untyped + growth
    return Snapshot(
        100.0,
        eps,
        gpus_total=total,
        gpus_by_type=by_type,
        gpus_growth=growth,
        **kw,  # type: ignore[arg-type]
    )


def ups(out: list[Decision]) -> dict[str, int]:
    return {d.endpoint: d.count for d in out if isinstance(d, ScaleUp)}


def blocked(out: list[Decision]) -> dict[str, str]:
    return {d.endpoint: d.reason for d in out if isinstance(d, Blocked)}


def test_a_free_gpu_of_another_type_does_not_help() -> None:
    h = ep("big", ("H100",), queued=1)
    busy_h = ep(
        "other", ("H100",), queued=0, running=1, replicas=(ReplicaView("o1", "busy", 1, gpu_type="H100"),)
    )
    out, _ = decide(snap(h, busy_h, by_type={"H100": 1, "L4": 1}), EMPTY)
    assert "big" not in ups(out)
    assert "H100" in blocked(out)["big"] and "0 free of type H100" in blocked(out)["big"]


def test_falls_back_down_the_preference_list() -> None:
    a = ep("a", ("H100", "A100"), queued=3, max_replicas=5)
    out, _ = decide(snap(a, by_type={"H100": 1, "A100": 1, "L4": 4}), EMPTY)
    up = next(d for d in out if isinstance(d, ScaleUp))
    assert up.count == 2 and "1 on H100" in up.reason and "1 on A100" in up.reason
    assert "a" in blocked(out)  # the third would need a third H100/A100: the L4s do not count


def test_untyped_endpoint_takes_any_gpu_and_typed_ones_keep_their_share() -> None:
    anyt = ep("any", None, queued=1)
    l4 = ep("small", ("L4",), queued=1)
    out, _ = decide(snap(anyt, l4, by_type={"L4": 1}, untyped=1), EMPTY)
    assert ups(out) == {"any": 1, "small": 1}


def test_preemption_takes_only_replicas_of_a_usable_type() -> None:
    want = ep("hi", ("H100",), priority=90, queued=1)
    low = ep(
        "lo",
        None,
        priority=10,
        replicas=(
            ReplicaView("l4-idle", "idle", 0, 0.0, gpu_type="L4"),
            ReplicaView("h100-idle", "idle", 0, 50.0, gpu_type="H100"),
        ),
    )
    out, _ = decide(snap(want, low, by_type={"H100": 1, "L4": 1}), EMPTY)
    drained = [d for d in out if isinstance(d, Drain)]
    assert [(d.replica_ids, d.preempted_by) for d in drained] == [(("h100-idle",), "hi")]


def test_preempting_an_idle_l4_does_not_help_an_h100_endpoint() -> None:
    want = ep("hi", ("H100",), priority=90, queued=1)
    low = ep("lo", ("L4",), priority=10, replicas=(ReplicaView("l1", "idle", 0, 0.0, gpu_type="L4"),))
    holder = ep(
        "mid",
        ("H100",),
        priority=50,
        queued=0,
        running=1,
        replicas=(ReplicaView("h1", "busy", 1, gpu_type="H100"),),
    )
    out, _ = decide(snap(want, low, holder, by_type={"H100": 1, "L4": 1}), EMPTY)
    assert not [d for d in out if isinstance(d, Drain)]
    assert "hi" in blocked(out)


def test_starvation_reclaim_picks_a_replica_of_a_usable_type() -> None:
    cfg = AutoscaleConfig(starvation_reclaim_after_s=100.0)
    want = ep("starved", ("A100",), priority=0, queued=1, oldest_queued_age_s=500.0)
    l4s = tuple(ReplicaView(f"l{k}", "busy", 1, gpu_type="L4") for k in range(3))
    a100s = tuple(ReplicaView(f"a{k}", "busy", 1, gpu_type="A100") for k in range(2))
    big = ep("big", ("L4",), priority=100, queued=50, running=3, max_replicas=3, replicas=l4s)
    mid = ep("mid", ("A100",), priority=100, queued=50, running=2, max_replicas=2, replicas=a100s)
    out, _ = decide(snap(want, big, mid, by_type={"A100": 2, "L4": 3}, config=cfg), EMPTY)
    drained = {i for d in out if isinstance(d, Drain) for i in d.replica_ids}
    assert drained and drained <= {"a0", "a1"}


def test_types_no_node_offers_are_blocked_with_a_clear_reason() -> None:
    a = ep("a", ("H200",), queued=1)
    out, _ = decide(snap(a, by_type={"L4": 2}), EMPTY)
    assert "a" not in ups(out)
    reason = blocked(out)["a"]
    assert "no node offers GPU type H200" in reason and "cannot grow" in reason


def test_a_cluster_that_can_grow_plans_the_missing_type_on_nodes_to_come() -> None:
    a = ep("a", ("H200",), queued=1)
    out, _ = decide(snap(a, by_type={"L4": 2}, growth=2.0, max_gpus=4.0), EMPTY)
    up = next(d for d in out if isinstance(d, ScaleUp))
    assert up.count == 1 and "nodes to come" in up.reason


def test_pending_replica_beyond_its_type_holds_growth() -> None:
    pending = ReplicaView("p", "starting", gpu_type="H200")
    a = ep("a", ("H200",), queued=3, replicas=(pending,), max_replicas=5)
    out, _ = decide(snap(a, by_type={"L4": 2}, growth=2.0, max_gpus=4.0), EMPTY)
    assert ups(out) == {"a": 1}  # growth 2 minus the pending replica's 1


def test_expected_replicas_hold_their_types() -> None:
    a = ep("a", ("A100",), queued=2, max_replicas=2)
    s = snap(a, by_type={"A100": 2})
    out, state = decide(s, EMPTY)
    assert ups(out) == {"a": 2}
    b = ep("b", ("A100",), queued=1)
    out2, _ = decide(snap(a, b, by_type={"A100": 2}), state)
    assert "b" not in ups(out2) and "b" in blocked(out2)


def test_snapshot_counts_each_types_gpus_used_elsewhere() -> None:
    spec = EndpointSpec(name="a", handler="m:f", gpus=1, gpu_types=["A100", "L4"])
    pools = {
        "a": {
            "replicas": [
                {"id": "r1", "state": "idle", "gpuType": "A100"},
                {"id": "r2", "state": "starting", "gpuType": "L4", "pendingPlacement": True},
            ]
        }
    }
    caps = {
        "A100": TypeCapacity(total=4, free=1, largest_free=1),  # 3 used: 1 by r1, 2 by someone else
        "L4": TypeCapacity(total=2, free=2, largest_free=1),
    }
    s = build_snapshot(
        100.0,
        {"a": spec},
        {"a": {"queued": 0}},
        pools,
        gpus_total=6,
        gpus_available=3,
        max_gpus=None,
        enabled=True,
        config=AutoscaleConfig(),
        gpu_types=caps,
    )
    assert s.gpus_by_type == {"A100": 4, "L4": 2}
    assert s.gpus_used_elsewhere_by_type == {"A100": 2.0, "L4": 0.0}
    assert s.endpoints[0].gpu_types == ("A100", "L4")
    assert [r.gpu_type for r in s.endpoints[0].replicas] == ["A100", "L4"]
