"""Scenario tests of decide(): one rule each, with the Waverless bugs it must not repeat."""

from __future__ import annotations

import json

import pytest

from orchestrator.core.autoscale import (
    AutoscaleConfig,
    AutoscalerState,
    Blocked,
    Decision,
    Drain,
    EndpointView,
    Override,
    Prewarm,
    ReplicaView,
    ScaleUp,
    Snapshot,
    decide,
    decision_to_dict,
)

pytestmark = pytest.mark.timeout(30)

EMPTY = AutoscalerState()


def idle(rid: str, since_s: float = 0.0) -> ReplicaView:
    return ReplicaView(rid, "idle", 0, since_s)


def busy(rid: str, jobs: int = 1) -> ReplicaView:
    return ReplicaView(rid, "busy", jobs)


def ep(name: str = "a", **kw: object) -> EndpointView:
    kw.setdefault("scale_up_cooldown_s", 0.0)
    kw.setdefault("scale_down_cooldown_s", 0.0)
    return EndpointView(name, **kw)  # type: ignore[arg-type]


def run(
    *eps: EndpointView, now_s: float = 100.0, gpus: float = 8, state: AutoscalerState = EMPTY, **kw: object
) -> tuple[list[Decision], AutoscalerState]:
    return decide(Snapshot(now_s, eps, gpus_total=gpus, **kw), state)  # type: ignore[arg-type]


def ups(decisions: list[Decision]) -> dict[str, int]:
    return {d.endpoint: d.count for d in decisions if isinstance(d, ScaleUp)}


def drains(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for d in decisions:
        if isinstance(d, Drain):
            out[d.endpoint] = out.get(d.endpoint, ()) + d.replica_ids
    return out


def test_scale_up_sized_to_the_work() -> None:
    out, _ = run(ep(queued=7, running=3, concurrency=2, replicas=(busy("r1", 2), busy("r2", 1))))
    assert ups(out) == {"a": 3}  # ceil(10 / 2) = 5 replicas, 2 there
    assert all(d.reason for d in out)


def test_no_scale_up_below_threshold_but_starved_work_still_gets_served() -> None:
    quiet, _ = run(ep(queued=3, scale_up_threshold=10, oldest_queued_age_s=20.0))
    assert ups(quiet) == {}
    late, _ = run(ep(queued=3, scale_up_threshold=10, oldest_queued_age_s=301.0))
    assert ups(late) == {"a": 3}


def test_capped_at_max_replicas_and_blocked_says_so() -> None:
    out, _ = run(ep(queued=20, max_replicas=4), gpus=100)
    assert ups(out) == {"a": 4}
    blocked = [d for d in out if isinstance(d, Blocked)]
    assert blocked and "maxReplicas" in blocked[0].reason and blocked[0].wanted == 16


def test_starting_replicas_count_as_capacity() -> None:
    starting = tuple(ReplicaView(f"r{i}", "starting") for i in range(3))
    out, _ = run(ep(queued=3, replicas=starting))
    assert ups(out) == {}


def test_cooldown_delays_a_second_scale_up_but_not_a_first_replica() -> None:
    e = ep(queued=2, scale_up_cooldown_s=30.0)
    out, state = run(e, now_s=0.0)
    assert ups(out) == {"a": 2}
    more = ep(queued=6, scale_up_cooldown_s=30.0, replicas=(busy("r1"), busy("r2")), running=2)
    assert ups(run(more, now_s=10.0, state=state)[0]) == {}
    assert ups(run(more, now_s=31.0, state=state)[0]) == {"a": 6}


def test_same_snapshot_twice_does_not_double_scale() -> None:
    snap = Snapshot(5.0, (ep(queued=4),), gpus_total=8)
    first, state = decide(snap, EMPTY)
    second, state2 = decide(snap, state)
    assert ups(first) == {"a": 4}
    assert ups(second) == {}
    # once the replicas are listed, the expectation is met and nothing more happens
    listed = ep(queued=4, replicas=tuple(ReplicaView(f"r{i}", "starting") for i in range(4)))
    assert ups(run(listed, now_s=6.0, state=state2)[0]) == {}


def test_lost_scale_up_is_retried_after_the_expectation_expires() -> None:
    _, state = run(ep(queued=1), now_s=0.0)
    assert ups(run(ep(queued=1), now_s=5.0, state=state)[0]) == {}
    assert ups(run(ep(queued=1), now_s=20.0, state=state)[0]) == {"a": 1}


def test_min_replicas_hold_without_any_work() -> None:
    out, _ = run(ep("vip", min_replicas=4), ep("batch", min_replicas=0))
    assert ups(out) == {"vip": 4}


def test_scale_down_after_idle_time_to_zero_idle_first() -> None:
    e = ep(scale_down_idle_s=300.0, replicas=(idle("old", 0.0), idle("new", 250.0), busy("b")), running=1)
    out, _ = run(e, now_s=299.0)
    assert drains(out) == {}
    out, state = run(e, now_s=301.0)
    assert drains(out) == {"a": ("old",)}
    assert state.memory("a").last_scale_down_s == 301.0
    out, _ = run(ep(scale_down_idle_s=300.0, replicas=(idle("x", 0.0),)), now_s=300.0)
    assert drains(out) == {"a": ("x",)}  # min 0: to zero


def test_scale_down_waits_for_empty_queue_cooldown_and_keeps_min() -> None:
    reps = (idle("r1"), idle("r2"), idle("r3"))
    assert drains(run(ep(queued=1, scale_up_threshold=5, replicas=reps), now_s=1000.0)[0]) == {}
    out, _ = run(ep(min_replicas=2, scale_down_idle_s=10.0, replicas=reps), now_s=1000.0)
    assert drains(out) == {"a": ("r1",)}
    cool = AutoscalerState({"a": run(ep(), now_s=990.0)[1].memory("a").__class__(last_scale_down_s=990.0)})
    out, _ = run(
        ep(scale_down_idle_s=10.0, scale_down_cooldown_s=60.0, replicas=reps), now_s=1000.0, state=cool
    )
    assert drains(out) == {}


def test_above_max_or_pinned_drains_idle_at_once() -> None:
    reps = (idle("r1", 99.0), idle("r2", 99.0), busy("r3"))
    out, _ = run(ep(max_replicas=1, replicas=reps), now_s=100.0)
    assert drains(out) == {"a": ("r1", "r2")}
    out, _ = run(ep(override=Override(desired_replicas=2), replicas=reps), now_s=100.0)
    assert drains(out) == {"a": ("r1",)}
    assert ups(run(ep(override=Override(desired_replicas=5), replicas=reps))[0]) == {"a": 2}


def test_disabled_endpoint_is_left_alone_but_its_gpus_count() -> None:
    off = ep("off", queued=9, override=Override(disabled=True), replicas=(idle("o1", 0.0),))
    out, _ = run(off, ep("b", queued=5), gpus=3, now_s=10_000.0)
    assert "off" not in ups(out) and "off" not in drains(out)
    assert ups(out) == {"b": 2}


def test_autoscaler_disabled_decides_nothing() -> None:
    out, state = run(ep(queued=5), enabled=False)
    assert out == [] and "a" in state.endpoints


def test_one_replica_per_endpoint_with_work_before_anyone_gets_a_second() -> None:
    out, _ = run(
        ep("hi", priority=90, queued=10),
        ep("mid", priority=50, queued=3),
        ep("lo", priority=10, queued=1),
        gpus=4,
    )
    assert ups(out) == {"hi": 2, "mid": 1, "lo": 1}


def test_free_gpus_a_first_replica_waits_on_are_not_given_to_a_second_replica_elsewhere() -> None:
    # 2 GPUs: "b" holds 1.5 (two starting, one draining); "a" needs a whole GPU: the free 0.5 plus the
    # draining 0.5. The free half must wait for "a", not start a third replica of "b" (found by Hypothesis).
    a = ep("a", gpus_per_replica=1.0, queued=1)
    b = ep(
        "b",
        gpus_per_replica=0.5,
        max_replicas=3,
        queued=2,
        running=1,
        replicas=(
            ReplicaView("b-0", "starting", 0),
            ReplicaView("b-1", "starting", 0),
            ReplicaView("b-2", "draining", 1),
        ),
    )
    out, _ = run(a, b, gpus=2)
    assert ups(out) == {}
    blocked = {d.endpoint: d.reason for d in out if isinstance(d, Blocked)}
    assert "waiting for 0.5 GPUs from draining replicas" in blocked["a"]
    assert "b" in blocked


def test_a_drain_not_yet_visible_still_counts_as_leaving_and_stays_its_preemptors() -> None:
    # The same snapshot twice (the pools have not applied the drains yet): the second call must neither
    # drain nor preempt anything new; the preempted replica's GPUs stay claimed by "hi".
    lo = ep("lo", priority=0, max_replicas=2, replicas=(idle("lo-0"), idle("lo-1")), scale_down_idle_s=1e9)
    hi = ep("hi", priority=60, queued=1)
    out, state = run(hi, lo, gpus=2)
    assert drains(out) == {"lo": ("lo-0",)} and ups(out) == {}
    out2, state2 = run(hi, lo, gpus=2, state=state)
    assert drains(out2) == {} and ups(out2) == {}, out2
    blocked = {d.endpoint: d.reason for d in out2 if isinstance(d, Blocked)}
    assert "waiting for 1 GPUs from draining replicas" in blocked["hi"]
    assert AutoscalerState.from_dict(json.loads(json.dumps(state2.to_dict()))) == state2


@pytest.mark.parametrize("cooldown_s", [0.0, 30.0])
def test_a_further_replica_never_preempts_for_gpus_that_are_free(cooldown_s: float) -> None:
    # 6 GPUs: "lo" holds 3 (one above its maxReplicas, drained); "hi" gets a first replica (2 GPUs) and
    # needs 2 more for its second: the 1 left free plus the 1 draining. Preempting another "lo" replica
    # for them would only see "lo" scale back up on the free GPU next tick (found by Hypothesis).
    lo = ep(
        "lo",
        priority=0,
        max_replicas=2,
        queued=2,
        replicas=(ReplicaView("lo-0", "starting", 0), idle("lo-1", 0.0), idle("lo-2", 1.0)),
    )
    hi = ep("hi", priority=1, gpus_per_replica=2.0, max_replicas=2, queued=2, scale_up_cooldown_s=cooldown_s)
    out, state = run(lo, hi, gpus=6)
    assert ups(out) == {"hi": 1}
    assert drains(out) == {"lo": ("lo-1",)}, "above maxReplicas only"
    blocked = next(d for d in out if isinstance(d, Blocked) and d.endpoint == "hi")
    assert "waiting for 1 GPUs from draining replicas" in blocked.reason
    again, _ = run(lo, hi, gpus=6, state=state)
    assert ups(again) == {} and set(drains(again).get("lo", ())) <= {"lo-1"}


def test_starvation_relief_and_preemption_never_drain_the_same_replica() -> None:
    # No GPU is free. "old" has waited 1200 s with no replica: starvation relief reclaims one of "mid"'s;
    # "top" (higher priority than "mid") preempts one for itself; each gets a replica of its own, and the
    # same snapshot again drains nothing new (found by Hypothesis).
    old = ep("old", priority=0, gpus_per_replica=0.5, max_replicas=1, queued=1, oldest_queued_age_s=1200.0)
    top = ep("top", priority=31, gpus_per_replica=0.5, max_replicas=2, queued=2)
    mid = ep(
        "mid",
        priority=10,
        gpus_per_replica=0.5,
        max_replicas=3,
        queued=10,
        replicas=(idle("m0"), ReplicaView("m1", "starting", 0), idle("m2"), idle("m3")),
    )
    cfg = AutoscaleConfig(starvation_reclaim_after_s=1200.0)
    out, state = run(old, top, mid, now_s=1000.0, gpus=0, config=cfg)
    by = [(i, d.preempted_by) for d in out if isinstance(d, Drain) for i in d.replica_ids]
    assert len({i for i, _ in by}) == len(by), f"a replica drained twice: {by}"
    assert {claimant for _, claimant in by} == {None, "old", "top"}, by
    again, _ = run(old, top, mid, now_s=1000.0, gpus=0, config=cfg, state=state)
    assert set(drains(again).get("mid", ())) <= {i for i, _ in by}


def test_rest_goes_by_effective_priority() -> None:
    out, _ = run(ep("p70", priority=70, queued=5), ep("p50", priority=50, queued=5), gpus=7)
    assert ups(out) == {"p70": 5, "p50": 2}
    # p50 under high load (+20 = 70) overtakes p65
    out, _ = run(ep("p65", priority=65, queued=5), ep("p50", priority=50, queued=12), gpus=7)
    assert ups(out) == {"p65": 1, "p50": 6}


def test_starvation_boost_fires_from_the_queue_age() -> None:
    old = ep("old", priority=40, queued=5, oldest_queued_age_s=601.0)  # +20 after two steps = 60
    new = ep("new", priority=55, queued=5, oldest_queued_age_s=1.0)
    out, _ = run(old, new, gpus=3)
    assert ups(out) == {"old": 2, "new": 1}


def test_starvation_clock_is_saved_when_the_queue_gives_no_age() -> None:
    waiting = ep("w", priority=40, queued=5)
    _, state = run(waiting, ep("x", priority=55), now_s=0.0, gpus=0)
    assert state.memory("w").waiting_since_s == 0.0
    out, _ = run(waiting, ep("x", priority=55, queued=5), now_s=601.0, gpus=3, state=state)
    assert ups(out) == {"w": 2, "x": 1}


def test_preempts_idle_replicas_of_lower_priority_never_busy_ones() -> None:
    lo = ep("lo", priority=30, running=1, replicas=(idle("l1", 99.0), idle("l2", 99.0), busy("l3")))
    hi = ep("hi", priority=70, queued=2, running=1, replicas=(busy("h1"),))
    out, _ = run(lo, hi, gpus=4)
    assert drains(out) == {"lo": ("l1", "l2")}
    drain = next(d for d in out if isinstance(d, Drain))
    assert drain.preempted_by == "hi" and "preempted" in drain.reason
    assert any(isinstance(d, Blocked) and d.endpoint == "hi" for d in out)


def test_preemption_keeps_min_and_does_not_repeat_while_drains_are_under_way() -> None:
    lo = ep("lo", priority=30, min_replicas=1, replicas=(idle("l1", 99.0), idle("l2", 99.0)))
    hi = ep("hi", priority=70, queued=1)
    out, _ = run(lo, hi, gpus=2)
    assert drains(out) == {"lo": ("l1",)}
    lo_after = ep(
        "lo", priority=30, min_replicas=1, replicas=(ReplicaView("l1", "draining"), idle("l2", 99.0))
    )
    out, _ = run(lo_after, hi, gpus=2)
    assert drains(out) == {}
    assert "draining" in next(d for d in out if isinstance(d, Blocked)).reason


def test_preempt_busy_when_configured() -> None:
    lo = ep("lo", priority=30, running=2, replicas=(busy("l1"), busy("l2")))
    hi = ep("hi", priority=70, queued=1)
    assert drains(run(lo, hi, gpus=2)[0]) == {}
    out, _ = run(lo, hi, gpus=2, config=AutoscaleConfig(preempt_busy=True, starvation_reclaim_after_s=None))
    assert drains(out) == {"lo": ("l1",)}


def test_starving_endpoint_reclaims_one_replica_even_from_higher_priority() -> None:
    hi = ep("hi", priority=90, queued=50, running=3, replicas=(busy("h1"), busy("h2"), busy("h3")))
    lo = ep("lo", priority=10, queued=1, oldest_queued_age_s=100.0)
    assert drains(run(hi, lo, gpus=3)[0]) == {}
    lo = ep("lo", priority=10, queued=1, oldest_queued_age_s=1300.0)
    out, _ = run(hi, lo, gpus=3)
    assert drains(out) == {"hi": ("h1",)}
    assert "starvation" in next(d for d in out if isinstance(d, Drain)).reason


def test_never_plans_more_gpus_than_exist_counting_fractional_and_elsewhere() -> None:
    out, _ = run(ep("a", queued=10, gpus_per_replica=0.5), ep("b", queued=10, gpus_per_replica=2), gpus=5)
    total = sum(n * (0.5 if e == "a" else 2) for e, n in ups(out).items())
    assert total <= 5
    out, _ = run(ep("a", queued=10), gpus=8, gpus_used_elsewhere=6)
    assert ups(out) == {"a": 2}
    out, _ = run(ep("a", queued=10), gpus=8, max_gpus=3)
    assert ups(out) == {"a": 3}


def test_cpu_endpoints_do_not_need_gpus_but_respect_cpu_cap() -> None:
    out, _ = run(ep("cpu", queued=4, gpus_per_replica=0, cpus_per_replica=2), gpus=0, cpus_total=6)
    assert ups(out) == {"cpu": 3}


def test_every_decision_has_a_reason_and_serialises() -> None:
    lo = ep("lo", priority=30, replicas=(idle("l1", 0.0),))
    out, state = run(lo, ep("hi", priority=70, queued=3), gpus=1)
    assert out and all(d.reason for d in out)
    json.dumps([decision_to_dict(d) for d in out])
    assert AutoscalerState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_learned_endpoint_prewarms_before_a_predicted_arrival() -> None:
    state = EMPTY
    period_s = 600.0
    t = 0.0
    # a job arrives every 10 minutes and runs for 5 s
    for k in range(12):
        t = k * period_s
        run_ep = ep(
            "p", keep_alive="learned", running=1, last_arrival_s=t, replicas=(busy("r"),), cold_start_s=20
        )
        _, state = run(run_ep, now_s=t + 1, state=state)
        quiet_ep = ep(
            "p", keep_alive="learned", last_arrival_s=t, replicas=(idle("r", t + 5),), cold_start_s=20
        )
        out, state = run(quiet_ep, now_s=t + 6, state=state)
    assert drains(out) == {"p": ("r",)}  # released early: the next job is predictably far
    assert "learned" in next(d for d in out if isinstance(d, Drain)).reason
    gone = ep("p", keep_alive="learned", last_arrival_s=t, cold_start_s=20)
    assert run(gone, now_s=t + 300, state=state)[0] == []
    out, state = run(gone, now_s=t + 590, state=state)
    assert [type(d) for d in out] == [Prewarm]
    assert run(gone, now_s=t + 591, state=state)[0] == []  # not twice


def test_drained_replicas_leave_the_expectation_no_phantom_capacity() -> None:
    """Two replicas asked for, listed, then drained at once: nothing of them may stay counted as capacity
    holding GPUs (it would block the next scale-up of this and every other endpoint)."""
    _, state = run(ep(queued=2), gpus=2, now_s=100.0)
    assert state.memory("a").expected_capacity == 2
    listed = ep(replicas=(idle("r1", 100.5), idle("r2", 100.5)), scale_down_idle_s=1.0)
    out, state = run(listed, gpus=2, now_s=103.0, state=state)
    assert sorted(drains(out)["a"]) == ["r1", "r2"]
    assert state.memory("a").expected_capacity == 0
    # Both drained replicas are gone from the listing: work for another endpoint gets both GPUs at once.
    out, _ = run(ep(), ep("b", queued=2), gpus=2, now_s=104.0, state=state)
    assert ups(out) == {"b": 2}


def test_preempted_replicas_leave_the_victims_expectation() -> None:
    _, state = run(ep("lo", priority=10, queued=2), gpus=2, now_s=100.0)
    lo = ep("lo", priority=10, replicas=(idle("l1", 100.5), idle("l2", 100.5)), scale_down_idle_s=300.0)
    out, state = run(lo, ep("hi", priority=90, queued=1), gpus=2, now_s=101.0, state=state)
    assert drains(out) == {"lo": ("l1",)}
    assert state.memory("lo").expected_capacity == 1


def test_memory_is_kept_only_for_endpoints_in_the_snapshot() -> None:
    _, state = run(ep(queued=2), ep("b", queued=1), gpus=4)
    assert set(state.endpoints) == {"a", "b"}
    _, state = run(ep("b"), gpus=4, now_s=101.0, state=state)
    assert set(state.endpoints) == {"b"}, "a deleted endpoint's memory goes; re-created, it starts afresh"


def _h100_seeker() -> EndpointView:
    """ "hi": one job queued, no replica, H100s only."""
    return ep("hi", priority=60, queued=1, gpu_types=("H100",))


def _mid_holding(busy_on: str) -> EndpointView:
    """ "mid" (untyped, priority 30): a busy replica on ``busy_on`` and an idle one on an H100, one queued."""
    busy = ReplicaView("m0", "busy", 1, gpu_type=busy_on)
    return ep(
        "mid",
        priority=30,
        queued=1,
        running=1,
        max_replicas=2,
        replicas=(busy, ReplicaView("m1", "idle", 0, 0.0, "H100")),
    )


def test_an_endpoint_preempted_takes_its_replacement_from_a_lower_one_in_the_same_call() -> None:
    # "hi" needs an H100: only "mid" has an idle one, "lo"'s idle replica is on an A100. "mid" (untyped)
    # then lacks the replica it lost and preempts "lo" for it at once: the same snapshot again drains
    # nothing new (found by Hypothesis: it used to happen one call later).
    hi, mid = _h100_seeker(), _mid_holding(busy_on="A100")
    lo = ep("lo", priority=0, replicas=(ReplicaView("l0", "idle", 0, 0.0, "A100"),), scale_down_idle_s=1e9)
    typed = {"gpus_by_type": {"H100": 1.0, "A100": 2.0}}
    out, state = run(hi, mid, lo, gpus=3, **typed)
    by = {i: d.preempted_by for d in out if isinstance(d, Drain) for i in d.replica_ids}
    assert by == {"m1": "hi", "l0": "mid"}
    assert ups(out) == {}
    blocked = {d.endpoint: d.reason for d in out if isinstance(d, Blocked)}
    assert "preempting 1 replica(s) of lo" in blocked["mid"]
    again, _ = run(hi, mid, lo, gpus=3, state=state, **typed)
    assert ups(again) == {} and set(drains(again).get("lo", ())) <= {"l0"} and "mid" not in drains(again)


def test_an_endpoint_preempted_scales_up_on_gpus_its_preemptor_cannot_use_in_the_same_call() -> None:
    # "hi" takes "mid"'s idle H100; the free A100 is of no use to "hi" but is to "mid", which starts its
    # replacement there now, not on the next call (found by Hypothesis).
    hi, mid = _h100_seeker(), _mid_holding(busy_on="H100")
    typed = {"gpus_by_type": {"H100": 2.0, "A100": 1.0}}
    out, state = run(hi, mid, gpus=3, **typed)
    assert drains(out) == {"mid": ("m1",)} and ups(out) == {"mid": 1}
    assert "has 1 (1 preempted)" in next(d.reason for d in out if isinstance(d, ScaleUp))
    again, _ = run(hi, mid, gpus=3, state=state, **typed)
    assert ups(again) == {} and set(drains(again).get("mid", ())) <= {"m1"}


def test_preemption_keeps_a_pinned_size() -> None:
    lo = ep("lo", priority=0, override=Override(desired_replicas=2), replicas=(idle("l0"), idle("l1")))
    out, _ = run(lo, ep("hi", priority=90, queued=1), gpus=2)
    assert drains(out) == {}
    assert any(isinstance(d, Blocked) and d.endpoint == "hi" for d in out)
