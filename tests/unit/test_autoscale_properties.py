"""Hypothesis properties of decide(): bounds, GPU budget, monotonicity, safety of drains, fairness."""

from __future__ import annotations

import itertools
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.core.autoscale import (
    AutoscaleConfig,
    AutoscalerState,
    Blocked,
    Decision,
    Drain,
    EndpointView,
    Prewarm,
    ReplicaView,
    ScaleUp,
    Snapshot,
    decide,
)

pytestmark = pytest.mark.timeout(120)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATES = ("starting", "idle", "busy", "draining", "unhealthy")


TYPES = ("H100", "A100", "L4")


@st.composite
def endpoints(draw: st.DrawFn, name: str, typed: bool = False) -> EndpointView:
    lo = draw(st.integers(0, 3))
    hi = draw(st.integers(max(lo, 1), 8))
    n = draw(st.integers(0, 8))
    reps = []
    prefs: tuple[str, ...] | None = None
    if typed and draw(st.booleans()):
        prefs = tuple(draw(st.permutations(TYPES))[: draw(st.integers(1, len(TYPES)))])
    for k in range(n):
        state = draw(st.sampled_from(STATES))
        reps.append(
            ReplicaView(
                f"{name}-{k}",
                state,
                draw(st.integers(1, 3)) if state in ("busy", "draining") else 0,
                draw(st.floats(0, 1000)) if state == "idle" else None,
                # a typed endpoint's replica holds one of its types; an untyped one's any type, or none known
                gpu_type=draw(st.sampled_from(prefs or (*TYPES, None))) if typed else None,
            )
        )
    queued = draw(st.integers(0, 30))
    return EndpointView(
        name,
        priority=draw(st.integers(0, 100)),
        min_replicas=lo,
        max_replicas=hi,
        scale_up_threshold=draw(st.integers(1, 5)),
        scale_down_idle_s=draw(st.sampled_from((0.0, 10.0, 300.0))),
        scale_up_cooldown_s=draw(st.sampled_from((0.0, 30.0))),
        scale_down_cooldown_s=draw(st.sampled_from((0.0, 60.0))),
        gpus_per_replica=draw(st.sampled_from((0.0, 0.5, 1.0, 2.0))),
        concurrency=draw(st.integers(1, 3)),
        keep_alive=draw(st.sampled_from(("fixed", "learned"))),
        queued=queued,
        running=sum(r.jobs_held for r in reps),
        oldest_queued_age_s=draw(st.floats(0, 2000)) if queued else None,
        replicas=tuple(reps),
        gpu_types=prefs,
    )


@st.composite
def snapshots(draw: st.DrawFn, preempt_busy: bool | None = None, typed: bool = False) -> Snapshot:
    eps = tuple(draw(endpoints(f"e{i}", typed)) for i in range(draw(st.integers(1, 5))))
    pb = draw(st.booleans()) if preempt_busy is None else preempt_busy
    reclaim = draw(st.sampled_from((None, 1200.0)))
    cfg = AutoscaleConfig(preempt_busy=pb, starvation_reclaim_after_s=reclaim)
    if not typed:
        return Snapshot(
            now_s=1000.0,
            endpoints=eps,
            gpus_total=draw(st.sampled_from((0, 1, 2, 4, 8, 16, 64))),
            gpus_used_elsewhere=draw(st.sampled_from((0.0, 1.0))),
            config=cfg,
        )
    by_type = {t: float(draw(st.sampled_from((0, 1, 2, 4)))) for t in TYPES}
    elsewhere = {t: min(n, float(draw(st.sampled_from((0, 1))))) for t, n in by_type.items()}
    untyped = float(draw(st.sampled_from((0, 2))))
    return Snapshot(
        now_s=1000.0,
        endpoints=eps,
        gpus_total=sum(by_type.values()) + untyped,
        gpus_used_elsewhere=sum(elsewhere.values()),
        gpus_by_type=by_type,
        gpus_used_elsewhere_by_type=elsewhere,
        config=cfg,
    )


def capacity(e: EndpointView) -> int:
    return sum(r.state in ("starting", "idle", "busy") for r in e.replicas)


def planned(e: EndpointView, out: list[Decision]) -> int:
    """Serving capacity once the decisions are applied."""
    up = sum(d.count for d in out if isinstance(d, (ScaleUp, Prewarm)) and d.endpoint == e.name)
    down = sum(len(d.replica_ids) for d in out if isinstance(d, Drain) and d.endpoint == e.name)
    return capacity(e) + up - down


def gpus_in_use(s: Snapshot, out: list[Decision]) -> float:
    used = s.gpus_used_elsewhere + sum(len(e.replicas) * e.gpus_per_replica for e in s.endpoints)
    per = {e.name: e.gpus_per_replica for e in s.endpoints}
    return used + sum(d.count * per[d.endpoint] for d in out if isinstance(d, (ScaleUp, Prewarm)))


@FAST
@given(snapshots())
def test_target_within_min_and_max_and_gpus_never_overplanned(s: Snapshot) -> None:
    out, _ = decide(s, AutoscalerState())
    before = s.gpus_used_elsewhere + sum(len(e.replicas) * e.gpus_per_replica for e in s.endpoints)
    assert gpus_in_use(s, out) <= max(s.gpus_total, before) + 1e-9
    per = {e.name: e.gpus_per_replica for e in s.endpoints}
    if any(isinstance(d, (ScaleUp, Prewarm)) and per[d.endpoint] > 0 for d in out):
        assert gpus_in_use(s, out) <= s.gpus_total + 1e-9
    for e in s.endpoints:
        after = planned(e, out)
        mine = [d for d in out if d.endpoint == e.name]
        grew = any(isinstance(d, (ScaleUp, Prewarm)) for d in mine)
        active = sum(r.state != "draining" for r in e.replicas)
        if grew:
            assert after + active - capacity(e) <= e.max_replicas
        scaled_down = [d for d in mine if isinstance(d, Drain) and d.preempted_by is None]
        if scaled_down and active <= e.max_replicas:
            assert after >= e.min_replicas
        unhealthy = sum(r.state == "unhealthy" for r in e.replicas)  # they count toward max_replicas
        if after + unhealthy < e.min_replicas:  # only for lack of resources, and then it says so
            assert any(isinstance(d, Blocked) for d in mine)
    assert all(d.reason for d in out)


@FAST
@given(snapshots(preempt_busy=False))
def test_never_drains_a_replica_holding_a_job_unless_allowed(s: Snapshot) -> None:
    out, _ = decide(s, AutoscalerState())
    holding = {r.id for e in s.endpoints for r in e.replicas if r.jobs_held > 0}
    for d in out:
        if isinstance(d, Drain) and set(d.replica_ids) & holding:
            assert d.preempted_by is not None and "starvation" in d.reason


@FAST
@given(snapshots())
def test_monotonic_in_queued_work(s: Snapshot) -> None:
    target = s.endpoints[0]
    more = EndpointView(
        **{
            **vars(target),
            "queued": target.queued + 5,
            "oldest_queued_age_s": target.oldest_queued_age_s or 0.0,
        }
    )
    bigger = Snapshot(**{**vars(s), "endpoints": (more, *s.endpoints[1:])})
    out, _ = decide(s, AutoscalerState())
    out2, _ = decide(bigger, AutoscalerState())
    assert planned(more, out2) >= planned(target, out)


@FAST
@given(snapshots())
def test_same_snapshot_twice_does_not_scale_twice(s: Snapshot) -> None:
    out, state = decide(s, AutoscalerState())
    out2, state2 = decide(s, state)
    assert not any(isinstance(d, (ScaleUp, Prewarm)) for d in out2)
    first_drained = {i for d in out if isinstance(d, Drain) for i in d.replica_ids}
    again = {i for d in out2 if isinstance(d, Drain) for i in d.replica_ids}
    assert again <= first_drained  # the same replicas again at most (draining by id is idempotent)
    assert AutoscalerState.from_dict(json.loads(json.dumps(state2.to_dict()))) == state2


@FAST
@given(snapshots())
def test_one_replica_per_endpoint_with_work_before_any_second(s: Snapshot) -> None:
    out, _ = decide(s, AutoscalerState())
    got = {d.endpoint: d.count for d in out if isinstance(d, ScaleUp)}
    starved = [
        e
        for e in s.endpoints
        if e.queued >= e.scale_up_threshold
        and capacity(e) == 0
        and e.gpus_per_replica > 0
        and e.name not in got
        # unhealthy replicas count toward maxReplicas: an endpoint already at its max cannot get one
        and sum(1 for r in e.replicas if r.state != "draining") < e.max_replicas
    ]
    if starved:
        for e in s.endpoints:
            if e.gpus_per_replica > 0 and e.name in got:
                assert capacity(e) + got[e.name] <= max(1, e.min_replicas), (e.name, starved[0].name)


def _type_free(s: Snapshot) -> dict[str, float]:
    """Free GPUs of each type before the decisions: its GPUs less those held elsewhere and by replicas."""
    free = {t: n - s.gpus_used_elsewhere_by_type.get(t, 0.0) for t, n in s.gpus_by_type.items()}
    for e in s.endpoints:
        for r in e.replicas:
            if r.gpu_type is not None:
                free[r.gpu_type] = free.get(r.gpu_type, 0.0) - e.gpus_per_replica
    return {t: max(0.0, v) for t, v in free.items()}


@FAST
@given(snapshots(typed=True))
def test_never_more_gpus_of_a_type_than_exist(s: Snapshot) -> None:
    """For every set S of types, the new replicas of endpoints that may use only types in S fit in the
    free GPUs of S (Hall's condition: the grants can be placed type by type)."""
    out, _ = decide(s, AutoscalerState())
    assert gpus_in_use(s, out) <= max(s.gpus_total, gpus_in_use(s, [])) + 1e-9
    free = _type_free(s)
    views = {e.name: e for e in s.endpoints}
    for k in range(1, len(TYPES) + 1):
        for subset in itertools.combinations(TYPES, k):
            new = sum(
                d.count * views[d.endpoint].gpus_per_replica
                for d in out
                if isinstance(d, (ScaleUp, Prewarm))
                and views[d.endpoint].gpu_types is not None
                and set(views[d.endpoint].gpu_types or ()) <= set(subset)
            )
            assert new <= sum(free[t] for t in subset) + 1e-9, (subset, new, free)


@FAST
@given(snapshots(typed=True))
def test_preemption_frees_only_gpus_of_a_type_the_blocked_endpoint_can_use(s: Snapshot) -> None:
    out, _ = decide(s, AutoscalerState())
    views = {e.name: e for e in s.endpoints}
    types = {r.id: r.gpu_type for e in s.endpoints for r in e.replicas}
    for d in out:
        if isinstance(d, Drain) and d.preempted_by is not None:
            wanted = views[d.preempted_by].gpu_types
            if wanted is not None:
                assert all(types[i] in wanted for i in d.replica_ids), (d, wanted)


@FAST
@given(snapshots(typed=True))
def test_one_replica_per_endpoint_with_work_before_any_second_per_type(s: Snapshot) -> None:
    """A typed endpoint with work and no replica that got none: no endpoint that could only have taken
    GPUs of its types got a second replica (the first replicas of all are granted before any second)."""
    out, _ = decide(s, AutoscalerState())
    got = {d.endpoint: d.count for d in out if isinstance(d, ScaleUp)}
    for e in s.endpoints:
        if (
            e.gpu_types is None
            or e.queued < e.scale_up_threshold
            or capacity(e) > 0
            or e.gpus_per_replica <= 0
            or e.name in got
            or sum(1 for r in e.replicas if r.state != "draining") >= e.max_replicas
        ):
            continue
        for f in s.endpoints:
            if f is e or f.name not in got or f.gpus_per_replica <= 0 or f.gpu_types is None:
                continue
            if set(f.gpu_types) <= set(e.gpu_types):
                assert capacity(f) + got[f.name] <= max(1, f.min_replicas), (f.name, e.name)


@FAST
@given(snapshots(typed=True))
def test_typed_snapshots_keep_the_general_bounds(s: Snapshot) -> None:
    test_target_within_min_and_max_and_gpus_never_overplanned.hypothesis.inner_test(s)  # type: ignore[attr-defined]
    test_same_snapshot_twice_does_not_scale_twice.hypothesis.inner_test(s)  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(
    st.floats(0, 10_000),
    st.integers(0, 10),
    st.floats(0, 299),
    st.sampled_from(("fixed",)),
)
def test_scale_to_zero_only_after_the_idle_time(now_s: float, n: int, idle_for_s: float, mode: str) -> None:
    reps = tuple(ReplicaView(f"r{k}", "idle", 0, now_s - idle_for_s) for k in range(n))
    e = EndpointView("a", scale_down_idle_s=300.0, scale_down_cooldown_s=0.0, keep_alive=mode, replicas=reps)  # type: ignore[arg-type]
    out, _ = decide(Snapshot(now_s, (e,), gpus_total=16), AutoscalerState())
    assert not any(isinstance(d, Drain) for d in out)
    e2 = EndpointView(
        "a",
        scale_down_idle_s=300.0,
        scale_down_cooldown_s=0.0,
        replicas=tuple(ReplicaView(f"r{k}", "idle", 0, now_s - 300.0) for k in range(n)),
    )
    out, _ = decide(Snapshot(now_s, (e2,), gpus_total=16), AutoscalerState())
    assert sum(len(d.replica_ids) for d in out if isinstance(d, Drain)) == n


def _fairness_run(
    gpus: int, hi_priority: int, reclaim_after_s: float | None, horizon_s: float
) -> float | None:
    """Constant high-priority load on every GPU; one low-priority job waits. When does it get a replica?"""
    cfg = AutoscaleConfig(starvation_reclaim_after_s=reclaim_after_s)
    hi_reps = {f"h{k}": "busy" for k in range(gpus)}
    state = AutoscalerState()
    t = 0.0
    while t <= horizon_s:
        hi = EndpointView(
            "hi",
            priority=hi_priority,
            max_replicas=gpus * 2,
            queued=100,
            running=sum(v == "busy" for v in hi_reps.values()),
            oldest_queued_age_s=5.0,
            replicas=tuple(
                ReplicaView(k, v, 1 if v in ("busy", "draining") else 0) for k, v in hi_reps.items()
            ),  # type: ignore[arg-type]
        )
        lo = EndpointView("lo", priority=0, queued=1, oldest_queued_age_s=t)
        out, state = decide(Snapshot(t, (hi, lo), gpus_total=gpus, config=cfg), state)
        for d in out:
            if isinstance(d, ScaleUp) and d.endpoint == "lo":
                return t
            if isinstance(d, Drain) and d.endpoint == "hi":
                hi_reps.update(dict.fromkeys(d.replica_ids, "draining"))
        # a job takes 60 s: a draining replica finishes it and leaves; busy ones pick the next job
        hi_reps = {k: v for k, v in hi_reps.items() if v != "draining" or t % 60 != 0}
        t += 10.0
    return None


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 6), st.integers(50, 100))
def test_starvation_is_bounded_under_constant_high_priority_load(gpus: int, hi_priority: int) -> None:
    bound_s = 1200.0 + 60.0 + 10.0  # reclaim threshold + one job + one tick
    served_at = _fairness_run(gpus, hi_priority, 1200.0, horizon_s=3 * bound_s)
    assert served_at is not None and served_at <= bound_s + 60.0
    # without the reclaim, busy replicas are never drained and the low endpoint waits (the documented trade)
    assert _fairness_run(gpus, hi_priority, None, horizon_s=1500.0) is None


def test_effective_priority_bounded() -> None:
    from orchestrator.core.autoscale import effective_priority

    cfg = AutoscaleConfig()
    for wait in (0.0, 299.0, 300.0, 900.0, 1e9, math.inf):
        p = effective_priority(10, 50, wait, cfg)
        assert 10 <= p <= 10 + cfg.high_load_boost + cfg.starvation_max_boost
    assert effective_priority(10, 1, 900.0, cfg) == 40
    assert effective_priority(10, 10, 1e9, cfg) == 60
