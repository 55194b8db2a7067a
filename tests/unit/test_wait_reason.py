"""Why a queued job waits: every code of core/wait_reason.py, their priority, and the autoscaler's facts."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from orchestrator.cli.waiting import WaitDisplay
from orchestrator.control_metrics import wait_facts
from orchestrator.core.autoscale import Blocked, ScaleUp
from orchestrator.core.wait_reason import (
    CODES,
    AutoscalerFacts,
    EndpointFacts,
    JobPlace,
    StartFailure,
    autoscaler_facts,
    facts_are_fresh,
    never_fits,
    one_line,
    wait_reason,
)

HEAD = JobPlace(0)
FRESH = AutoscalerFacts(enabled=True, gpus_total=1.0, gpus_free=1.0)
TRACEBACK = (
    'Traceback (most recent call last):\n  File "handler.py", line 3, in <module>\n'
    "    import nothing_here\nModuleNotFoundError: No module named 'nothing_here'\n"
)


def code(place: JobPlace, ep: EndpointFacts) -> str:
    return wait_reason(place, ep).code


def test_no_handler_and_no_outside_worker() -> None:
    r = wait_reason(JobPlace(2), EndpointFacts(has_handler=False))
    assert r.code == "no_handler"
    assert r.message == "the endpoint has no handler and no outside worker is polling it; 2 jobs ahead"


def test_outside_workers_serve_an_endpoint_without_handler() -> None:
    ep = EndpointFacts(has_handler=False, outside=2, busy=2)
    assert wait_reason(HEAD, ep).message == "next in line; all 2 outside workers busy"
    assert code(HEAD, ep) == "waiting_for_worker"
    assert code(HEAD, replace(ep, busy=1, idle=1)) == "dispatching"
    assert code(JobPlace(3), ep) == "queue_position"


def test_handler_fails_to_load_names_the_error() -> None:
    ep = EndpointFacts(start_failure=StartFailure(TRACEBACK, failures=3), starting=1)
    r = wait_reason(JobPlace(1), ep)
    assert r.code == "handler_fails_to_load"
    assert r.message == (
        "replicas fail to load the handler (3 failed starts in a row): "
        "ModuleNotFoundError: No module named 'nothing_here'"
    )
    assert "\n" not in r.message


RUNTIME_ENV_FAILURE = (
    "Failed to set up runtime environment.\nCould not create the actor because its associated runtime env "
    "failed to be created.\n...\n    ERROR: No matching distribution found for no-such-pkg==1.0"
)


def test_a_runtime_env_that_fails_to_set_up_is_not_called_the_handler() -> None:
    ep = EndpointFacts(start_failure=StartFailure(RUNTIME_ENV_FAILURE, failures=2), starting=1)
    r = wait_reason(HEAD, ep)
    assert (r.code, r.message) == (
        "handler_fails_to_load",
        "the replicas' runtime environment fails to set up (2 failed starts in a row): "
        "ERROR: No matching distribution found for no-such-pkg==1.0",
    )


def test_handler_failure_from_the_autoscaler_when_the_queue_has_none() -> None:
    facts = replace(FRESH, start_failures=1, start_error="ValueError: signal only works in main thread")
    r = wait_reason(HEAD, EndpointFacts(autoscaler=facts))
    assert (r.code, r.message) == (
        "handler_fails_to_load",
        "replicas fail to load the handler: ValueError: signal only works in main thread",
    )


def test_the_pools_own_error_when_it_cannot_start_replicas() -> None:
    ep = EndpointFacts(
        start_failure=StartFailure("runtime_env: pip install failed\nNo matching dist", pool=True)
    )
    r = wait_reason(HEAD, ep)
    assert (r.code, r.message) == (
        "handler_fails_to_load",
        "the pool cannot start replicas: No matching dist",
    )


def test_a_ready_replica_outweighs_old_start_failures() -> None:
    ep = EndpointFacts(start_failure=StartFailure("boom"), busy=1, max_replicas=1)
    assert code(HEAD, ep) == "max_replicas"


def test_autoscaler_disabled() -> None:
    ep = EndpointFacts(autoscaler=replace(FRESH, enabled=False))
    r = wait_reason(JobPlace(1), ep)
    assert r.code == "autoscaler_disabled"
    assert r.message == "the autoscaler is disabled and no replica; none will be started; 1 job ahead"
    busy = wait_reason(HEAD, replace(ep, busy=2))
    assert busy.message == "the autoscaler is disabled and all 2 replicas busy; none will be started"
    assert code(HEAD, replace(ep, idle=1)) == "dispatching"  # a free replica still serves


def test_no_gpu_says_what_it_needs_and_what_there_is() -> None:
    facts = replace(
        FRESH, blocked="not enough GPUs (1 GPUs free)", blocked_cause="gpus", gpus_total=1.0, gpus_free=1.0
    )
    r = wait_reason(HEAD, EndpointFacts(gpus=2.0, autoscaler=facts))
    assert r.code == "no_gpu"
    assert r.message == (
        "needs 2 x GPU per replica; 1 free of 1, cluster limit 1 (the cluster does not grow): "
        "it can never fit"
    )
    growing = replace(facts, max_gpus=8.0, gpus_free=0.0)
    assert wait_reason(JobPlace(4), EndpointFacts(gpus=2.0, autoscaler=growing)).message == (
        "needs 2 x GPU per replica; 0 free of 1, cluster limit 8; 4 jobs ahead"
    )


def test_no_gpu_of_a_type_no_node_offers() -> None:
    facts = replace(
        FRESH,
        blocked="no node offers GPU type A100 and the cluster cannot grow",
        blocked_cause="gpu_type",
        gpus_by_type={"T4": (1.0, 1.0)},
    )
    r = wait_reason(HEAD, EndpointFacts(gpus=1.0, gpu_types=("A100",), autoscaler=facts))
    assert r.code == "no_gpu"
    assert r.message == (
        "needs 1 x A100 per replica; 0 free of 0 A100, cluster limit 1 (the cluster does not grow): "
        "it can never fit"
    )


def test_no_capacity_for_cpus_or_memory() -> None:
    facts = replace(FRESH, blocked="not enough CPUs", blocked_cause="cpus")
    r = wait_reason(HEAD, EndpointFacts(gpus=0.0, autoscaler=facts))
    assert (r.code, r.message) == ("no_capacity", "cannot place a replica: not enough CPUs")


def test_max_replicas_all_busy() -> None:
    r = wait_reason(JobPlace(3), EndpointFacts(busy=2, max_replicas=2))
    assert (r.code, r.message) == ("max_replicas", "all 2 replicas busy (maxReplicas 2); 3 jobs ahead")
    assert wait_reason(HEAD, EndpointFacts(max_replicas=0)).message == "no replica allowed (maxReplicas 0)"
    assert code(HEAD, EndpointFacts(busy=1, idle=1, max_replicas=2)) == "dispatching"


def test_scaling_up() -> None:
    r = wait_reason(JobPlace(1), EndpointFacts(starting=2, pending_placement=1, busy=1, max_replicas=3))
    assert (r.code, r.message) == ("scaling_up", "2 replicas starting: 1 waiting for resources; 1 job ahead")
    assert wait_reason(HEAD, EndpointFacts(starting=1)).message == "1 replica starting"
    placing = wait_reason(HEAD, EndpointFacts(starting=1, pending_placement=1))
    assert placing.message == "1 replica starting: waiting for resources"


def test_scaling_up_says_what_a_replica_being_set_up_waits_for() -> None:
    setup = "installing torch (runtimeEnv.pip)"
    one = wait_reason(HEAD, EndpointFacts(starting=1, setting_up=1, setup=setup))
    assert (one.code, one.message) == ("scaling_up", "1 replica starting: installing torch (runtimeEnv.pip)")
    mixed = wait_reason(HEAD, EndpointFacts(starting=3, pending_placement=1, setting_up=1, setup=setup))
    assert mixed.message == (
        "3 replicas starting: 1 waiting for resources, 1 installing torch (runtimeEnv.pip)"
    )


def test_low_priority_and_queue_position() -> None:
    ep = EndpointFacts(idle=1)
    low = wait_reason(JobPlace(5, low_priority=True), ep)
    assert (low.code, low.message) == ("low_priority", "low priority: 5 jobs ahead (normal-priority first)")
    pos = wait_reason(JobPlace(1), ep)
    assert (pos.code, pos.message) == ("queue_position", "1 job ahead in the queue")


def test_next_in_line() -> None:
    assert wait_reason(HEAD, EndpointFacts(idle=1)).code == "dispatching"
    assert wait_reason(HEAD, EndpointFacts(busy=1)).message == (
        "next in line; all 1 replica busy, the autoscaler may add one"
    )
    assert (
        wait_reason(HEAD, EndpointFacts()).message
        == "next in line; no replica yet, the autoscaler starts one"
    )


def test_a_slot_held_by_a_stopped_jobs_code_is_named() -> None:
    """A cancelled job's sync code runs on until it returns: its replica takes no job meanwhile, so the
    job says it waits for that, not that a free replica is taking it."""
    at_max = wait_reason(JobPlace(1), EndpointFacts(busy=1, held_by_stopped=1, max_replicas=1))
    assert (at_max.code, at_max.message) == (
        "max_replicas",
        "all 1 replica busy (maxReplicas 1); 1 held by a stopped job's code until it returns; 1 job ahead",
    )
    below = wait_reason(HEAD, EndpointFacts(busy=2, held_by_stopped=1, max_replicas=3))
    assert (below.code, below.message) == (
        "waiting_for_worker",
        "next in line; all 2 replicas busy, the autoscaler may add one; 1 held by a stopped job's code "
        "until it returns",
    )
    off = AutoscalerFacts(enabled=False)
    disabled = wait_reason(HEAD, EndpointFacts(busy=1, held_by_stopped=1, autoscaler=off))
    assert disabled.message == (
        "the autoscaler is disabled and all 1 replica busy; none will be started; 1 held by a stopped "
        "job's code until it returns"
    )


def test_priority_the_cause_that_blocks_progress_wins() -> None:
    blocked = replace(FRESH, blocked="not enough GPUs (0 GPUs free)", blocked_cause="gpus", gpus_free=0.0)
    everything = EndpointFacts(
        gpus=1.0,
        max_replicas=1,
        busy=0,
        starting=1,
        start_failure=StartFailure("ImportError: x"),
        autoscaler=blocked,
    )
    place = JobPlace(3, low_priority=True)
    seen = [code(place, everything)]
    ep = replace(everything, start_failure=None)
    seen.append(code(place, ep))  # no gpu before scaling up / max replicas
    ep = replace(ep, autoscaler=FRESH, starting=0, busy=1)
    seen.append(code(place, ep))  # max replicas before low priority
    ep = replace(ep, max_replicas=3, starting=1)
    seen.append(code(place, ep))
    ep = replace(ep, starting=0, idle=1)
    seen.append(code(place, ep))
    seen.append(code(JobPlace(3), ep))
    assert seen == [
        "handler_fails_to_load",
        "no_gpu",
        "max_replicas",
        "scaling_up",
        "low_priority",
        "queue_position",
    ]
    assert [c for c in CODES if c in seen] == seen  # CODES lists them in the same order


def test_every_code_is_reachable_and_listed() -> None:
    cases = [
        (HEAD, EndpointFacts(has_handler=False)),
        (HEAD, EndpointFacts(start_failure=StartFailure("x"))),
        (HEAD, EndpointFacts(autoscaler=replace(FRESH, enabled=False))),
        (
            HEAD,
            EndpointFacts(gpus=1, autoscaler=replace(FRESH, blocked="not enough GPUs", blocked_cause="gpus")),
        ),
        (HEAD, EndpointFacts(autoscaler=replace(FRESH, blocked="not enough memory", blocked_cause="memory"))),
        (HEAD, EndpointFacts(busy=1, max_replicas=1)),
        (HEAD, EndpointFacts(starting=1)),
        (JobPlace(1, True), EndpointFacts(idle=1)),
        (JobPlace(1), EndpointFacts(idle=1)),
        (HEAD, EndpointFacts()),
        (HEAD, EndpointFacts(idle=1)),
    ]
    assert [code(p, e) for p, e in cases] == list(CODES)


def test_one_line() -> None:
    assert one_line(TRACEBACK) == "ModuleNotFoundError: No module named 'nothing_here'"
    assert one_line("") == ""
    assert one_line("x" * 500, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("age_s", "interval_s", "fresh"),
    [(0, 1, True), (10, 1, True), (11, 1, False), (14, 5, True), (16, 5, False), (-1, 1, False)],
)
def test_facts_are_trusted_for_a_few_ticks(age_s: float, interval_s: float, fresh: bool) -> None:
    assert facts_are_fresh(age_s, interval_s) is fresh


def test_published_facts_round_trip() -> None:
    summaries = {
        "a": {"replicas": [], "startFailures": 2, "errors": [{"error": "old"}, {"error": "ImportError: y"}]},
        "b": {"replicas": [], "startFailures": 0, "errors": [{"error": "fixed since"}]},
    }
    decisions = [Blocked("b", 1, "not enough GPUs (0 GPUs free)"), ScaleUp("a", 1, "queued")]
    facts = wait_facts(
        summaries,
        decisions,
        enabled=True,
        gpus_total=1.0,
        gpus_free=0.0,
        max_gpus=None,
        gpu_types={"T4": (1.0, 0.0)},
        interval_s=1.0,
    )
    a, b = autoscaler_facts(facts, "a"), autoscaler_facts(facts, "b")
    assert (a.start_failures, a.start_error, a.blocked) == (2, "ImportError: y", None)
    assert (b.start_failures, b.start_error, b.blocked_cause) == (0, None, "gpus")
    assert b.blocked == "not enough GPUs (0 GPUs free)"
    assert (b.gpus_total, b.gpus_free, b.max_gpus, b.gpus_by_type) == (1.0, 0.0, None, {"T4": (1.0, 0.0)})
    assert autoscaler_facts(facts, "unknown") == AutoscalerFacts(
        gpus_total=1.0, gpus_by_type={"T4": (1.0, 0.0)}
    )
    off = wait_facts({}, [], enabled=False, gpus_total=0, gpus_free=0, max_gpus=4, gpu_types={}, interval_s=2)
    assert autoscaler_facts(off, "a") == AutoscalerFacts(enabled=False, max_gpus=4.0)


# ripple endpoint create: GPUs that can never fit -------------------------------------------------------

ONE_GPU_NODE = {"gpus": 1.0, "gpusByType": {"T4": 1.0}}
CPU_NODE = {"gpus": 0.0, "gpusByType": {}}


def test_never_fits() -> None:
    assert never_fits(2.0, None, [ONE_GPU_NODE, ONE_GPU_NODE], None) == (
        "needs 2 GPUs per replica, but the largest node has 1 GPU and the cluster cannot grow (no maxGpus)"
    )
    assert never_fits(1.0, None, [CPU_NODE], None) == (
        "needs 1 GPU per replica, but no node offers GPUs and the cluster cannot grow (no maxGpus)"
    )
    assert never_fits(1.0, ["A100"], [ONE_GPU_NODE], None) == (
        "needs 1 GPU of type A100 per replica, but no node offers GPUs of type A100 and the cluster cannot "
        "grow (no maxGpus)"
    )
    assert never_fits(1.0, ["A100", "T4"], [ONE_GPU_NODE], None) is None
    assert never_fits(0.5, None, [ONE_GPU_NODE], None) is None
    assert never_fits(0.0, ["A100"], [CPU_NODE], None) is None  # a CPU endpoint fits anywhere
    assert never_fits(4.0, ["A100"], [CPU_NODE], 8.0) is None  # nodes to come may offer it
    assert never_fits(16.0, None, [CPU_NODE], 8.0) == (
        "needs 16 GPUs per replica, above the cluster's limit maxGpus 8"
    )


# ripple submit --wait: the reason as it changes ---------------------------------------------------------


def queued(code: str, message: str) -> dict[str, object]:
    return {"id": "j1", "status": "IN_QUEUE", "waitReason": {"code": code, "message": message}}


def test_wait_display_prints_a_plain_line_per_change_when_not_a_terminal() -> None:
    out = io.StringIO()
    d = WaitDisplay(out, live=False)
    for st in (
        queued("scaling_up", "1 replica starting"),
        queued("scaling_up", "1 replica starting"),
        queued("queue_position", "1 job ahead in the queue"),
        {"id": "j1", "status": "IN_PROGRESS"},
    ):
        d.update(st)
    d.clear()
    assert out.getvalue() == (
        "j1 waiting (scaling_up): 1 replica starting\nj1 waiting (queue_position): 1 job ahead in the queue\n"
    )


def test_wait_display_rewrites_one_live_line_on_a_terminal() -> None:
    out = io.StringIO()
    d = WaitDisplay(out, live=True)
    d.update(queued("queue_position", "12 jobs ahead in the queue"))
    d.update(queued("queue_position", "12 jobs ahead in the queue"))
    d.update(queued("dispatching", "next"))
    d.update({"id": "j1", "status": "COMPLETED"})
    first = "j1 waiting (queue_position): 12 jobs ahead in the queue"
    second = "j1 waiting (dispatching): next"
    assert out.getvalue() == (
        "\r" + first + "\r" + second + " " * (len(first) - len(second)) + "\r" + " " * len(second) + "\r"
    )
    assert "\n" not in out.getvalue()
