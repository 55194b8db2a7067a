"""Structured logs: JSON lines with context fields, request id hygiene, the text fallback."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from orchestrator import logs

pytestmark = pytest.mark.timeout(10)


def _logger(name: str, stream: io.StringIO, json_lines: bool = True) -> logging.Logger:
    logs.configure("DEBUG", logger=name, stream=stream, json_lines=json_lines)
    return logging.getLogger(name)


def test_json_line_carries_the_context_fields() -> None:
    out = io.StringIO()
    log = _logger("ripple.t1", out)
    with logs.log_context(request_id="req-1", endpoint="ep", job_id="j1", worker_id="w1"):
        log.info("took %d", 3)
    rec = json.loads(out.getvalue().strip())
    assert rec["msg"] == "took 3"
    assert rec["level"] == "INFO" and rec["logger"] == "ripple.t1"
    assert {k: rec[k] for k in logs.FIELDS} == {
        "request_id": "req-1",
        "endpoint": "ep",
        "job_id": "j1",
        "worker_id": "w1",
    }
    assert rec["ts"].endswith("+00:00")


def test_extra_wins_and_context_ends_with_the_block() -> None:
    out = io.StringIO()
    log = _logger("ripple.t2", out)
    with logs.log_context(request_id="outer", job_id="a"):
        log.info("one", extra={"job_id": "b"})
    log.info("two")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["job_id"] == "b" and first["request_id"] == "outer"
    assert "request_id" not in second and "job_id" not in second


def test_exceptions_are_one_line_with_the_traceback() -> None:
    out = io.StringIO()
    log = _logger("ripple.t3", out)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "ValueError: boom" in json.loads(lines[0])["exc"]


def test_tasks_do_not_share_fields() -> None:
    out = io.StringIO()
    log = _logger("ripple.t4", out)

    async def call(rid: str) -> None:
        logs.bind(request_id=rid)
        await asyncio.sleep(0.01)
        log.info("done")

    async def main() -> None:
        await asyncio.gather(call("r1"), call("r2"))

    asyncio.run(main())
    assert sorted(json.loads(x)["request_id"] for x in out.getvalue().splitlines()) == ["r1", "r2"]
    assert "request_id" not in logs.current()


def test_text_format_on_a_terminal_and_no_duplicate_handlers() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    logs.configure("INFO", logger="ripple.t5", stream=out)
    logs.configure("INFO", logger="ripple.t5", stream=out)
    with logs.log_context(job_id="j9"):
        logging.getLogger("ripple.t5").warning("careful")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "WARNING ripple.t5: careful [job_id=j9]" in lines[0]


@pytest.mark.parametrize(
    ("raw", "ok"),
    [("abc-123", True), ("a" * 128, True), ("a" * 129, False), ("", False), ("x y", False), ("a\nb", False)],
)
def test_request_id_hygiene(raw: str, ok: bool) -> None:
    assert (logs.clean_request_id(raw) is not None) is ok
    assert len(logs.new_request_id()) == 32


def test_a_step_failing_again_and_again_is_a_few_lines_not_a_traceback_each_time() -> None:
    out = io.StringIO()
    log = _logger("ripple.t_repeat", out)
    now_s = [100.0]
    failures = logs.RepeatedFailure(log, "queue sweep", lambda: now_s[0], every_s=60.0)
    failures.succeeded()  # nothing failed: nothing said
    for _ in range(30):  # a store that does not answer, one tick every second
        try:
            raise ConnectionError("Error 2 connecting to redis.sock.\nNo such file or directory.")
        except ConnectionError as exc:
            failures.failed(exc, endpoint="ep")
        now_s[0] += 1.0
    now_s[0] += 40.0
    failures.failed(TimeoutError("no answer"))
    failures.succeeded()
    failures.failed(ValueError("once more"))
    failures.succeeded()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["level"], r["msg"]) for r in lines] == [
        ("ERROR", "queue sweep failed"),
        ("ERROR", "queue sweep still failing: 31 times in 70 s; last: no answer"),
        ("WARNING", "queue sweep works again after 31 failures in 70 s"),
        ("ERROR", "queue sweep failed"),
        ("WARNING", "queue sweep works again after 1 failure in 0 s"),
    ]
    assert "Traceback" in lines[0]["exc"] and "No such file" in lines[0]["exc"]
    assert lines[0]["endpoint"] == "ep"
    assert "exc" not in lines[1] and "ValueError: once more" in lines[3]["exc"]
