"""The job lifecycle: every edge of TRANSITIONS (legal and illegal), lost leases, queue order, the RunPod
worker SDK's result shapes, and the status objects the APIs return."""

from __future__ import annotations

import json
from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.core.errors import Conflict, InvalidInput
from orchestrator.core.jobs import (
    FINAL,
    RETRYABLE,
    TRANSITIONS,
    JobCursor,
    JobStatus,
    JobView,
    can_transition,
    check_transition,
    encode_output,
    parse_worker_result,
    queue_score,
    status_after_lost_lease,
)

pytestmark = pytest.mark.timeout(60)
S = JobStatus
LEGAL = sorted(((a, b) for a in S for b in TRANSITIONS[a]), key=lambda e: (e[0].value, e[1].value))
ILLEGAL = sorted(
    ((a, b) for a, b in product(S, S) if b not in TRANSITIONS[a]), key=lambda e: (e[0].value, e[1].value)
)


def test_table_covers_every_status() -> None:
    assert set(TRANSITIONS) == set(S)
    reachable = {b for targets in TRANSITIONS.values() for b in targets}
    assert reachable | {S.IN_QUEUE} == set(S), "every status is entered by some edge"
    assert all(b in S for targets in TRANSITIONS.values() for b in targets)


def test_the_documented_edges() -> None:
    assert TRANSITIONS[S.IN_QUEUE] == {S.IN_PROGRESS, S.CANCELLED, S.TIMED_OUT}
    assert TRANSITIONS[S.IN_PROGRESS] == {S.COMPLETED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.IN_QUEUE}
    assert TRANSITIONS[S.COMPLETED] == frozenset()
    for s in (S.FAILED, S.TIMED_OUT, S.CANCELLED):
        assert TRANSITIONS[s] == {S.IN_QUEUE}


@pytest.mark.parametrize(("frm", "to"), LEGAL, ids=[f"{a.value}->{b.value}" for a, b in LEGAL])
def test_legal_edge(frm: JobStatus, to: JobStatus) -> None:
    assert can_transition(frm, to)
    check_transition("j", frm, to)


@pytest.mark.parametrize(("frm", "to"), ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_illegal_edge(frm: JobStatus, to: JobStatus) -> None:
    assert not can_transition(frm, to)
    with pytest.raises(Conflict) as info:
        check_transition("job-1", frm, to)
    assert info.value.status_code == 409
    assert (
        "job-1" in info.value.message and frm.value in info.value.message and to.value in info.value.message
    )
    assert info.value.detail == {"id": "job-1", "status": frm.value, "requested": to.value}


def test_final_and_retryable_sets() -> None:
    assert {S.COMPLETED, S.FAILED, S.TIMED_OUT, S.CANCELLED} == FINAL
    assert {S.FAILED, S.TIMED_OUT, S.CANCELLED} == RETRYABLE
    assert S.COMPLETED not in RETRYABLE, "a completed job never changes"
    assert not any(can_transition(s, s) for s in S), "no self-loops"


@pytest.mark.parametrize(
    ("attempts", "max_retries", "expected"),
    [
        (1, 0, S.FAILED),
        (1, 1, S.IN_QUEUE),
        (2, 1, S.FAILED),
        (3, 3, S.IN_QUEUE),
        (4, 3, S.FAILED),
        (0, 0, S.IN_QUEUE),
    ],
)
def test_status_after_lost_lease(attempts: int, max_retries: int, expected: JobStatus) -> None:
    assert status_after_lost_lease(attempts, max_retries) is expected


@given(st.integers(0, 100))
def test_lost_lease_gives_exactly_max_retries_plus_one_attempts(max_retries: int) -> None:
    attempts = 1
    while status_after_lost_lease(attempts, max_retries) is S.IN_QUEUE:
        attempts += 1
    assert attempts == max_retries + 1


@given(st.integers(1, 2**40), st.integers(1, 2**40))
def test_queue_score_orders_normal_before_low_then_fifo(a: int, b: int) -> None:
    assert queue_score(False, a) < queue_score(True, b), "any normal job before any low-priority job"
    assert (queue_score(False, a) < queue_score(False, b)) == (a < b)
    assert (queue_score(True, a) < queue_score(True, b)) == (a < b)
    assert queue_score(True, a) == float(int(queue_score(True, a))), "exact in a double"


# Worker results, in every shape the RunPod worker SDK (1.12) posts -----------------------------------


@pytest.mark.parametrize(
    ("body", "kind", "output", "error", "stop"),
    [
        ({"output": {"x": 1}}, "completed", {"x": 1}, None, False),
        ({"output": None}, "completed", None, None, False),
        ({"output": [1, 2]}, "completed", [1, 2], None, False),
        ({}, "completed", None, None, False),
        ({"output": {"rest": 1}, "error": "bad"}, "failed", {"rest": 1}, "bad", False),
        (
            {"error": json.dumps({"error_type": "ValueError", "error_message": "x"})},
            "failed",
            None,
            None,
            False,
        ),
        ({"error": {"msg": "dict"}}, "failed", None, '{"msg": "dict"}', False),
        ({"error": ""}, "completed", None, None, False),
        ({"error": None, "output": 3}, "completed", 3, None, False),
        ({"status": "IN_PROGRESS", "output": {"pct": 50}}, "progress", {"pct": 50}, None, False),
        ({"status": "IN_PROGRESS", "output": "p", "stopPod": True}, "progress", "p", None, True),
        ({"output": 1, "stopPod": True}, "completed", 1, None, True),
        ({"error": "boom", "stopPod": True}, "failed", None, "boom", True),
        ("plain text", "completed", "plain text", None, False),
        ([1, 2, 3], "completed", [1, 2, 3], None, False),
        (42, "completed", 42, None, False),
        (None, "completed", None, None, False),
    ],
)
def test_parse_worker_result(body: object, kind: str, output: object, error: str | None, stop: bool) -> None:
    res = parse_worker_result(body)
    assert res.kind == kind
    assert res.output == output
    assert res.stop_worker is stop
    if kind == "failed" and error is None:  # the SDK's JSON-encoded exception string, passed through as is
        assert isinstance(body, dict)
        assert res.error == body["error"]
    else:
        assert res.error == error


def test_progress_after_final_is_never_a_completion() -> None:
    assert parse_worker_result({"status": "IN_PROGRESS", "output": None}).kind == "progress"
    assert parse_worker_result({"status": "COMPLETED", "output": 1}).kind == "completed"


# Status objects -------------------------------------------------------------------------------------


def view(**kw: object) -> JobView:
    base: dict[str, object] = {"id": "j1", "endpoint": "ep", "status": S.IN_QUEUE, "created_ms": 1_000}
    base.update(kw)
    return JobView(**base)  # type: ignore[arg-type]


def test_status_object_of_a_queued_job() -> None:
    obj = view().status_object(now_ms=4_000)
    assert obj == {"id": "j1", "status": "IN_QUEUE", "delayTime": 3_000, "executionTime": 0}


def test_status_object_carries_the_wait_reason_of_a_queued_job_only() -> None:
    why = {"code": "queue_position", "message": "2 jobs ahead in the queue"}
    obj = view().status_object(now_ms=4_000, wait_reason=why)
    assert obj == {
        "id": "j1",
        "status": "IN_QUEUE",
        "delayTime": 3_000,
        "executionTime": 0,
        "waitReason": why,
    }
    assert view().detail(4_000, why)["waitReason"] == why
    running = view(status=S.IN_PROGRESS, worker_id="w1", started_ms=2_000, first_started_ms=2_000)
    assert "waitReason" not in running.status_object(now_ms=4_000, wait_reason=why)


def test_status_object_of_a_running_job_shows_progress_and_worker() -> None:
    job = view(
        status=S.IN_PROGRESS,
        worker_id="w1",
        started_ms=2_000,
        first_started_ms=2_000,
        progress_json='{"p":1}',
    )
    obj = job.status_object(now_ms=5_000)
    assert obj == {
        "id": "j1",
        "status": "IN_PROGRESS",
        "delayTime": 1_000,
        "executionTime": 3_000,
        "workerId": "w1",
        "output": {"p": 1},
    }


def test_status_object_of_a_completed_job() -> None:
    job = view(
        status=S.COMPLETED,
        worker_id="w1",
        first_started_ms=1_500,
        started_ms=2_000,
        finished_ms=2_250,
        output_json="",
        retried=2,
    )
    obj = job.status_object(now_ms=99_999)
    assert obj["delayTime"] == 500, "delay runs to the first start, not the latest"
    assert obj["executionTime"] == 250, "execution of the latest attempt, frozen at finish"
    assert "output" in obj and obj["output"] is None, "a completed job always has output"
    assert obj["retries"] == 2


def test_status_object_of_a_failed_and_a_never_started_job() -> None:
    failed = view(status=S.FAILED, started_ms=2_000, first_started_ms=2_000, finished_ms=3_000, error="boom")
    assert failed.status_object(10_000)["error"] == "boom"
    assert "output" not in failed.status_object(10_000)
    cancelled = view(status=S.CANCELLED, finished_ms=1_700)
    obj = cancelled.status_object(now_ms=50_000)
    assert obj["delayTime"] == 700 and obj["executionTime"] == 0


def test_times_never_negative() -> None:
    job = view(created_ms=10_000, status=S.IN_PROGRESS, started_ms=12_000)
    assert job.status_object(now_ms=5_000)["delayTime"] == 0
    assert job.status_object(now_ms=5_000)["executionTime"] == 0


def test_detail_adds_policy_timings_and_history() -> None:
    hist = ({"at": 2_000, "from": "IN_QUEUE", "to": "IN_PROGRESS", "reason": "taken", "worker": "w1"},)
    job = view(
        status=S.IN_PROGRESS,
        input_json='{"x": 1}',
        webhook="http://h/",
        worker_id="w1",
        started_ms=2_000,
        first_started_ms=2_000,
        attempts=1,
        max_retries=3,
        execution_timeout_ms=600_000,
        ttl_ms=86_400_000,
        low_priority=True,
        history=hist,
    )
    d = job.detail(now_ms=3_000)
    assert d["id"] == "j1" and d["status"] == "IN_PROGRESS" and d["executionTime"] == 1_000
    assert d["endpoint"] == "ep" and d["input"] == {"x": 1} and d["webhook"] == "http://h/"
    assert (d["createdAt"], d["startedAt"], d["finishedAt"]) == (1_000, 2_000, None)
    assert (d["attempts"], d["maxRetries"]) == (1, 3)
    assert (d["executionTimeout"], d["ttl"], d["lowPriority"]) == (600_000, 86_400_000, True)
    assert d["history"] == list(hist)
    json.dumps(d)


# Outputs as the store keeps them ---------------------------------------------------------------------


def test_outputs_are_stored_as_compact_strict_json() -> None:
    assert encode_output(None) == ""
    assert encode_output({"a": [1, 2.5, "é"], "b": None}) == '{"a":[1,2.5,"\\u00e9"],"b":null}'
    nans = {"loss": float("nan"), "best": [float("inf"), -float("inf"), 1.0], "t": (float("nan"),)}
    assert encode_output(nans) == '{"loss":null,"best":[null,null,1.0],"t":[null]}'
    assert encode_output(0) == "0" and encode_output("") == '""', "falsy outputs are outputs"
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference detected"):
        encode_output(circular)
    with pytest.raises(TypeError, match="bytes is not JSON serializable"):
        encode_output({"nan": float("nan"), "png": b"x"})


def test_the_output_a_status_object_shows_is_the_stored_text() -> None:
    done = view(status=S.COMPLETED, output_json='{"y":2}')
    assert done.shown_output_json() == '{"y":2}' and done.status_object(9_000)["output"] == {"y": 2}
    assert view(status=S.COMPLETED).shown_output_json() == "null", "a completed job always has output"
    running = view(status=S.IN_PROGRESS, progress_json='{"p":1}')
    assert running.shown_output_json() == '{"p":1}'
    failed = view(status=S.FAILED, error="boom", progress_json='{"p":1}')
    assert failed.shown_output_json() is None and "output" not in failed.status_object(9_000)
    assert view(status=S.FAILED, output_json='"partial"').shown_output_json() == '"partial"'
    assert "output" not in done.status_object(9_000, with_output=False)
    assert view(input_json="not json").status is S.IN_QUEUE, "the input is decoded only when read"


def test_a_listing_cursor_reads_back_what_it_wrote() -> None:
    assert JobCursor.parse("1700000000000") == JobCursor(1_700_000_000_000)
    job_id = "0f6f1c2e-7d4b-4b8e-9a51-3c2d1e0f9a8b"
    assert JobCursor(5, job_id).text() == f"5:{job_id}"
    assert JobCursor.parse(JobCursor(5, job_id).text()) == JobCursor(5, job_id)
    for bad in ("", "-1", "5:", ":3", "5:3:1", "a", "5:ABC", "5:a b", "5:" + "a" * 65):
        with pytest.raises(InvalidInput, match="cursor"):
            JobCursor.parse(bad)
