"""The job lifecycle: one enum, one transition table, and the pure rules around it.

The table is the single source of truth: the Redis store renders it into its Lua scripts, the in-memory
fake applies it through :func:`check_transition`, and the tests walk every edge of it.

    IN_QUEUE ──take──▶ IN_PROGRESS ──result──▶ COMPLETED | FAILED
       │                  │  └──timeout / cancel──▶ TIMED_OUT | CANCELLED
       │                  └──lease lost (budget left) / handed back──▶ IN_QUEUE
       └──cancel / purge / ttl──▶ CANCELLED | TIMED_OUT
    FAILED | TIMED_OUT | CANCELLED ──retry──▶ IN_QUEUE
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property
from typing import Any

from orchestrator.core.errors import Conflict, InvalidInput
from orchestrator.core.expr import Expr, Num, Op, Var


class JobStatus(str, Enum):
    """States of a job, spelled as the RunPod API spells them."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"


S = JobStatus

DEFAULT_KEEP_RESULTS_S = 1800.0
"""How long a finished job (its status, output, error, history and stream) is kept after it ended, unless
``RIPPLE_KEEP_RESULTS_S`` says otherwise: as long as RunPod keeps an asynchronous job's result. Then the
store deletes it, so that its memory holds what was recent, not every job ever run."""

TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    S.IN_QUEUE: frozenset({S.IN_PROGRESS, S.CANCELLED, S.TIMED_OUT}),
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.FAILED, S.TIMED_OUT, S.CANCELLED, S.IN_QUEUE}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.IN_QUEUE}),
    S.TIMED_OUT: frozenset({S.IN_QUEUE}),
    S.CANCELLED: frozenset({S.IN_QUEUE}),
}

FINAL: frozenset[JobStatus] = frozenset({S.COMPLETED, S.FAILED, S.TIMED_OUT, S.CANCELLED})
"""States that end an attempt; only ``retry`` leaves them (and never COMPLETED)."""

RETRYABLE: frozenset[JobStatus] = frozenset(s for s in FINAL if S.IN_QUEUE in TRANSITIONS[s])


def can_transition(current: JobStatus, to: JobStatus) -> bool:
    """True when the table allows ``current -> to``."""
    return to in TRANSITIONS[current]


def check_transition(job_id: str, current: JobStatus, to: JobStatus) -> None:
    """Raise :class:`Conflict` unless the table allows ``current -> to``."""
    if not can_transition(current, to):
        raise Conflict(
            f"job {job_id} is {current.value} and cannot become {to.value}",
            {"id": job_id, "status": current.value, "requested": to.value},
        )


# Rules the Lua scripts apply too: written once as expressions, evaluated here, rendered into the scripts by
# orchestrator.store.scripts.

REQUEUE_AFTER_LOST_LEASE: Expr = Op("<=", Var("attempts"), Var("max_retries"))
"""True while a job whose attempt was lost has budget left: ``attempts`` counts the takes so far (the lost
one included), ``max_retries`` how many times the job may run again after its first attempt."""

LOW_PRIORITY_STRIDE = 1 << 50
"""Added to a low-priority job's queue score: above any sequence number, exact in a Redis double."""

QUEUE_SCORE: Expr = Op("+", Op("*", Var("low"), Num(LOW_PRIORITY_STRIDE)), Var("seq"))
"""Score of a queued job (``low`` is 0 or 1, ``seq`` the instance's submission sequence number)."""


def status_after_lost_lease(attempts: int, max_retries: int) -> JobStatus:
    """Where a job goes when its worker disappears mid-attempt: back to the queue while
    :data:`REQUEUE_AFTER_LOST_LEASE` holds, else it fails."""
    requeue = REQUEUE_AFTER_LOST_LEASE.evaluate({"attempts": attempts, "max_retries": max_retries})
    return S.IN_QUEUE if requeue else S.FAILED


def queue_score(low_priority: bool, seq: int) -> float:
    """Sort key of a queued job (:data:`QUEUE_SCORE`): normal priority before low, FIFO (by sequence
    number) within each. Scores stay exact in a Redis double: ``seq`` is far below 2**52."""
    return float(QUEUE_SCORE.evaluate({"low": int(low_priority), "seq": seq}))


@dataclass(frozen=True)
class WorkerResult:
    """What a worker's ``job-done`` post means, decoded from any of the RunPod SDK's shapes."""

    kind: str
    """``"completed"``, ``"failed"`` or ``"progress"`` (a progress update never finishes a job)."""
    output: Any = None
    error: str | None = None
    stop_worker: bool = False


def parse_worker_result(body: Any) -> WorkerResult:
    """Decode the body of ``POST job-done`` as the RunPod worker SDK sends it.

    Shapes (see reference/runpod-protocol.md): ``{"output": x}``; ``{"output": rest, "error": e}`` when
    the handler returned a dict with ``"error"``; ``{"error": "<json string>"}`` on an exception;
    ``{"status": "IN_PROGRESS", "output": p}`` from ``progress_update()``; ``"stopPod": true`` with
    ``refresh_worker``. Anything that is not a JSON object is treated as the output itself.
    """
    if not isinstance(body, dict):
        return WorkerResult("completed", output=body)
    stop = bool(body.get("stopPod", False))
    if body.get("status") == S.IN_PROGRESS.value:
        return WorkerResult("progress", output=body.get("output"), stop_worker=stop)
    if body.get("error") not in (None, ""):
        error = body["error"]
        text = error if isinstance(error, str) else json.dumps(error)
        return WorkerResult("failed", output=body.get("output"), error=text, stop_worker=stop)
    return WorkerResult("completed", output=body.get("output"), stop_worker=stop)


def input_of(value: Any) -> Any:
    """A job's input as a file line or ``--input`` gives it: ``{"input": x, ...}`` is the job of input
    ``x``; any other value is the input itself."""
    return value["input"] if isinstance(value, dict) and "input" in value else value


def inputs_of_lines(lines: Iterable[str], where: str) -> list[Any]:
    """The job inputs of a JSON Lines file (``ripple submit --file``, ``python -m orchestrator.batch``):
    one JSON value per line, blank lines skipped, each an input or a job (:func:`input_of`). Raises
    InvalidInput naming the file (``where``), the line and why for a line that is not JSON, and for a file
    with no job: nothing is submitted from a file with a bad line."""
    inputs: list[Any] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            why = f"{exc.msg} at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise InvalidInput(f"{where}, line {n}: not valid JSON ({why})") from None
        inputs.append(input_of(row))
    if not inputs:
        raise InvalidInput(f"{where}: no jobs in it (one JSON value per line)")
    return inputs


def oversized_result_error(what: str, size_bytes: int, limit_bytes: int) -> str:
    """The error a job fails with when its worker's ``what`` (result, stream chunk) was over the HTTP body
    limit: its size, the limit and the setting, and what to do instead."""
    return (
        f"the worker's {what} was {size_bytes} bytes, over the limit of {limit_bytes} bytes "
        "(RIPPLE_MAX_BODY_BYTES); return less, for example a URL where the output was stored"
    )


@dataclass(frozen=True)
class JobCursor:
    """Where a job listing (newest first; jobs created at the same time by id, descending) goes on: after the
    job ``after_id`` created at ``before_ms`` (the jobs of one batch share their creation time, and a page
    may end inside such a group), or with ``after_id`` None, strictly below ``before_ms``. A position, not a
    count: it holds when jobs listed before it are deleted meanwhile."""

    before_ms: int
    after_id: str | None = None

    def text(self) -> str:
        """The cursor as the API hands it out (``nextCursor``): ``"MS:ID"``, or ``"MS"``."""
        return str(self.before_ms) if self.after_id is None else f"{self.before_ms}:{self.after_id}"

    @staticmethod
    def parse(text: str) -> JobCursor:
        """A cursor as :meth:`text` writes it (a bare creation time, ms, lists strictly before it). Raises
        InvalidInput naming ``cursor`` for anything else."""
        ms, sep, after_id = text.partition(":")
        if not ms.isdigit() or (sep and not _CURSOR_ID.fullmatch(after_id)):
            raise InvalidInput(
                "cursor must be a nextCursor of an earlier page",
                [
                    {
                        "loc": ["query", "cursor"],
                        "msg": "expected MS or MS:ID (a creation time in ms, and a job id)",
                        "type": "value_error",
                    }
                ],
            )
        return JobCursor(int(ms), after_id if sep else None)


_CURSOR_ID = re.compile(r"[0-9a-f-]{1,64}")
"""A job id as a cursor carries it (Ripple's ids are UUIDs)."""


def encode_output(output: Any) -> str:
    """A job's output (or progress) as the store keeps it and the APIs send it on: compact, strict JSON
    ("" for None), a float that is NaN or infinite as ``null`` (as the API always showed it). Raises
    TypeError, ValueError or RecursionError for a value JSON cannot carry (``json.dumps``'s own words)."""
    if output is None:
        return ""
    try:
        return json.dumps(output, separators=(",", ":"), allow_nan=False)
    except ValueError:
        json.dumps(output)  # raises for a circular reference; passes when a float was all it refused
        return json.dumps(_finite(output), separators=(",", ":"), allow_nan=False)


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it, in lists, tuples and dict values, made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def decoded(stored: str) -> Any:
    """A JSON value as the store keeps it (``input``, ``output``, ``progress``), decoded; None for ""."""
    return json.loads(stored) if stored else None


@dataclass(frozen=True)
class JobView:
    """A job as read from the store; the source of the status objects the APIs return."""

    id: str
    endpoint: str
    status: JobStatus
    created_ms: int
    input_json: str = ""
    """The input as stored: JSON text ("" for none); :attr:`input` decodes it when first read."""
    output_json: str = ""
    """The output as stored: compact JSON text ("" for none; :func:`encode_output`)."""
    error: str | None = None
    webhook: str | None = None
    worker_id: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    first_started_ms: int | None = None
    attempts: int = 0
    max_retries: int = 0
    execution_timeout_ms: int = 0
    ttl_ms: int = 0
    low_priority: bool = False
    retried: int = 0
    progress_json: str = ""
    """The latest ``progress_update`` of a running job, as stored ("" for none)."""
    version: int | None = None
    """The endpoint version of the worker that took the latest attempt (None when not known)."""
    history: tuple[Mapping[str, Any], ...] = ()

    # Decoded when first read, not when read from the store: the input of a job whose status is asked for,
    # an output passed on as stored (:meth:`shown_output_json`), are never decoded at all.
    @cached_property
    def input(self) -> Any:
        return decoded(self.input_json)

    @cached_property
    def output(self) -> Any:
        return decoded(self.output_json)

    @cached_property
    def progress(self) -> Any:
        return decoded(self.progress_json)

    def delay_ms(self, now_ms: int) -> int:
        """Time in the queue: from creation to the first start (or to now while queued)."""
        start = self.first_started_ms if self.first_started_ms is not None else None
        end = start if start is not None else (self.finished_ms or now_ms)
        return max(0, end - self.created_ms)

    def execution_ms(self, now_ms: int) -> int:
        """Time running in the latest attempt (0 when it never started)."""
        if self.started_ms is None:
            return 0
        end = self.finished_ms if self.finished_ms is not None else now_ms
        return max(0, end - self.started_ms)

    def shown_output_json(self) -> str | None:
        """What the status object shows as ``output``, as stored (JSON text; None: no ``output`` key): the
        output of a job that has one, ``null`` for a COMPLETED job without, else a running job's latest
        progress update."""
        if self.output_json or self.status is S.COMPLETED:
            return self.output_json or "null"
        if self.status is S.IN_PROGRESS and self.progress_json:
            return self.progress_json
        return None

    def status_object(
        self, now_ms: int, wait_reason: Mapping[str, str] | None = None, *, with_output: bool = True
    ) -> dict[str, Any]:
        """The RunPod status object: ``id``, ``status``, ``delayTime``, ``executionTime`` and, when known,
        ``workerId``, ``version`` (the endpoint version that ran it), ``output``
        (:meth:`shown_output_json`, decoded; left out with ``with_output=False``, for a caller that sends
        it on as stored), ``error``, ``retries``; an IN_QUEUE job's ``waitReason`` when given
        (``{"code", "message"}``, see :mod:`orchestrator.core.wait_reason`)."""
        obj: dict[str, Any] = {
            "id": self.id,
            "status": self.status.value,
            "delayTime": self.delay_ms(now_ms),
            "executionTime": self.execution_ms(now_ms),
        }
        if self.worker_id:
            obj["workerId"] = self.worker_id
        if self.version is not None:
            obj["version"] = self.version
        if with_output and (shown := self.shown_output_json()) is not None:
            obj["output"] = self.output if self.output_json else decoded(shown)
        if self.error is not None:
            obj["error"] = self.error
        if self.retried:
            obj["retries"] = self.retried
        if wait_reason is not None and self.status is S.IN_QUEUE:
            obj["waitReason"] = dict(wait_reason)
        return obj

    def status_json(self, now_ms: int) -> str:
        """:meth:`status_object` as JSON text, its ``output`` (:meth:`shown_output_json`) put in as stored:
        an output of megabytes is not decoded to be encoded again (a reply, a webhook's body)."""
        head = json.dumps(self.status_object(now_ms, with_output=False), separators=(",", ":"))
        shown = self.shown_output_json()
        return head if shown is None else f'{head[:-1]},"output":{shown}}}'

    def detail(self, now_ms: int, wait_reason: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The management view: the status object (with ``waitReason`` when given) plus input, timings,
        policy and attempt history."""
        obj = self.status_object(now_ms, wait_reason)
        obj.update(
            {
                "endpoint": self.endpoint,
                "input": self.input,
                "webhook": self.webhook,
                "createdAt": self.created_ms,
                "startedAt": self.started_ms,
                "finishedAt": self.finished_ms,
                "attempts": self.attempts,
                "maxRetries": self.max_retries,
                "executionTimeout": self.execution_timeout_ms,
                "ttl": self.ttl_ms,
                "lowPriority": self.low_priority,
                "history": list(self.history),
            }
        )
        return obj
