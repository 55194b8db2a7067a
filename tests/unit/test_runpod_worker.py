"""RunPod worker files in a replica: start() captured, handlers found by the documented rule, and the worker
SDK's result semantics (return values, streams, exceptions, concurrency_modifier, refresh_worker)."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from orchestrator.core import runpod_worker as rw
from orchestrator.core.error_text import error_line
from orchestrator.core.errors import InvalidInput
from orchestrator.core.handlers import ChunkNotKept, Handler, load_handler, run_job
from orchestrator.core.jobs import parse_worker_result
from orchestrator.core.wait_reason import one_line

pytestmark = pytest.mark.timeout(60)

WORKERS = "tests.e2e.runpod_workers"


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``modules(name, source)`` writes an importable module; every one written is unloaded after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(4) as ex:
        yield ex


# Finding the handler ----------------------------------------------------------------------------------


def test_module_level_start_is_captured_without_running_the_sdk() -> None:
    h = load_handler(f"{WORKERS}.module_start")
    mod = sys.modules[f"{WORKERS}.module_start"]
    assert h.fn is mod.handler and h.kind == "sync" and h.source == "start"
    assert h.options == rw.WorkerOptions()
    import runpod

    assert runpod.serverless.start is rw._start  # the SDK is patched in this process, not the file
    # Loading again (the module is already imported, its code does not run twice) finds the same config.
    assert load_handler(f"{WORKERS}.module_start").fn is mod.handler


def test_start_options_are_read_from_the_config() -> None:
    h = load_handler(f"{WORKERS}.stream_aggregate")
    assert h.kind == "gen" and h.options.return_aggregate_stream and not h.options.refresh_worker


def test_main_guarded_start_config_is_evaluated_in_the_module() -> None:
    h = load_handler(f"{WORKERS}.async_concurrent")
    mod = sys.modules[f"{WORKERS}.async_concurrent"]
    assert h.fn is mod.handler and h.kind == "agen" and h.source == "main-block"
    assert h.options.return_aggregate_stream
    assert h.options.concurrency_modifier is not None and h.options.concurrency_modifier(1) == 2

    g = load_handler(f"{WORKERS}.main_guarded")
    assert g.fn is sys.modules[f"{WORKERS}.main_guarded"].handler and g.kind == "async"


def test_main_block_config_built_in_the_block_falls_back_to_the_handler_function(modules: Any) -> None:
    name = modules(
        "guarded_var",
        """
        import runpod

        def handler(job):
            return job["input"]

        if __name__ == "__main__":
            config = {"handler": handler, "refresh_worker": True}
            runpod.serverless.start(config)
        """,
    )
    h = load_handler(name)
    assert h.source == "handler-attribute" and h.options == rw.WorkerOptions()


def test_module_function_ref_keeps_working_and_takes_the_options_of_its_own_start(modules: Any) -> None:
    name = modules(
        "two_fns",
        """
        import runpod

        def handler(job):
            return 1

        def other(job):
            return 2

        runpod.serverless.start({"handler": handler, "refresh_worker": True})
        """,
    )
    assert load_handler(f"{name}:handler").options.refresh_worker
    other = load_handler(f"{name}:other")
    assert other.fn(None) == 2 and other.options == rw.WorkerOptions()


def test_a_module_with_no_handler_is_refused_with_the_rule(modules: Any) -> None:
    name = modules("nothing_here", "def run(job):\n    return 1\n")
    with pytest.raises(InvalidInput, match=r"neither calls runpod.serverless.start\(\) nor defines"):
        load_handler(name)
    with pytest.raises(InvalidInput, match="is not a callable"):
        load_handler(f"{name}:missing")
    with pytest.raises(InvalidInput, match="'module' or 'module:function'"):
        load_handler(f"{name}:")


def test_a_missing_module_says_whether_the_code_or_a_dependency_is_missing(modules: Any) -> None:
    with pytest.raises(ModuleNotFoundError) as own:
        load_handler("no_such_pkg.handlers:echo")
    assert own.value.name == "no_such_pkg"
    assert str(own.value).startswith("No module named 'no_such_pkg': the handler's own code is not on")
    assert "ripple deploy PATH --endpoint NAME" in str(own.value)
    name = modules("needs_torch", "import torchh.nn\n\ndef handler(job):\n    return 1\n")
    with pytest.raises(ModuleNotFoundError) as dep:
        load_handler(name)
    assert dep.value.name == "torchh"
    assert str(dep.value).startswith("No module named 'torchh': a module the handler imports is not")
    assert "add the package that provides 'torchh' to the folder's requirements.txt" in str(dep.value)
    line = error_line("".join(traceback.format_exception(dep.value)))
    assert line.startswith("ModuleNotFoundError: No module named 'torchh': ") and "runtimeEnv.pip" in line


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ([1], "not a dict"),
        ({"handler": None}, "no callable 'handler'"),
        ({"handler": print, "concurrency_modifier": 3}, "'concurrency_modifier' .* not callable"),
    ],
)
def test_bad_start_configs_are_refused(config: Any, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        rw.parse_start_config(config, "mod")


def test_progress_update_goes_to_the_sink_however_it_was_imported() -> None:
    rw.install()
    import runpod
    from runpod.serverless.modules import rp_progress

    seen: list[tuple[str, Any]] = []
    rw.set_progress_sink(lambda job, data: seen.append((job["id"], data)))
    try:
        runpod.serverless.progress_update({"id": "j1"}, {"step": 0})
        rp_progress.progress_update({"id": "j1"}, {"step": 1})
    finally:
        rw.set_progress_sink(None)
    runpod.serverless.progress_update({"id": "j1"}, {"step": 2})  # no sink: dropped, no error
    assert seen == [("j1", {"step": 0}), ("j1", {"step": 1})]


# The SDK's result semantics ---------------------------------------------------------------------------


def _done(outcome: rw.JobOutcome) -> tuple[str, Any, str | None]:
    res = parse_worker_result(outcome.body)
    return res.kind, res.output, res.error


def test_returned_values() -> None:
    plain = rw.WorkerOptions()
    assert _done(rw.outcome_of_return({"a": 1}, plain)) == ("completed", {"a": 1}, None)
    assert _done(rw.outcome_of_return([1, 2], plain)) == ("completed", [1, 2], None)
    assert _done(rw.outcome_of_return(None, plain)) == ("completed", None, None)
    assert _done(rw.outcome_of_return({}, plain)) == ("completed", None, None)
    # A falsy "error" is removed and means nothing, as in the SDK.
    assert _done(rw.outcome_of_return({"a": 1, "error": ""}, plain)) == ("completed", {"a": 1}, None)


def test_returned_error_fails_the_job_and_keeps_the_rest_as_output() -> None:
    out = rw.outcome_of_return({"error": "bad prompt", "partial": True}, rw.WorkerOptions())
    assert out.failed and not out.refresh
    assert _done(out) == ("failed", {"partial": True}, "bad prompt")
    structured = rw.outcome_of_return({"error": {"code": 7}}, rw.WorkerOptions())
    assert json.loads(_done(structured)[2] or "") == {"code": 7}


def test_refresh_worker_in_the_return_is_stripped_and_asks_for_a_new_worker() -> None:
    out = rw.outcome_of_return({"x": 1, "refresh_worker": True}, rw.WorkerOptions())
    assert out.refresh and not out.failed and out.body["stopPod"] is True
    assert _done(out) == ("completed", {"x": 1}, None)
    kept = rw.outcome_of_return({"x": 1, "refresh_worker": False}, rw.WorkerOptions())
    assert not kept.refresh and _done(kept) == ("completed", {"x": 1}, None)
    every = rw.WorkerOptions(refresh_worker=True)
    assert rw.outcome_of_return("x", every).refresh
    assert rw.outcome_of_exception(ValueError("x"), "w", every).refresh
    assert rw.outcome_of_stream([1], None, every).refresh
    for failed in (
        rw.outcome_of_exception(ValueError("x"), "w", every),
        rw.outcome_of_stream([1], "chunk 1 failed", every),
        rw.not_json_outcome("Object of type bytes is not JSON serializable", every),
    ):  # a failed job under refresh_worker still replaces the worker after it
        assert failed.failed and failed.refresh and failed.body["stopPod"] is True
        assert _done(failed)[0] == "failed"


def test_exception_error_carries_message_and_traceback() -> None:
    try:
        raise KeyError("missing prompt")
    except KeyError as exc:
        out = rw.outcome_of_exception(exc, "w1", rw.WorkerOptions())
    kind, _, error = _done(out)
    assert kind == "failed" and out.failed and not out.refresh
    err = json.loads(error or "")
    assert err["error_message"] == "'missing prompt'" and err["worker_id"] == "w1"
    assert "KeyError" in err["error_type"] and "raise KeyError" in err["error_traceback"]


def test_stream_outcomes() -> None:
    chunks = [{"t": 0}, {"t": 1}]
    assert rw.outcome_of_stream(chunks, None, rw.WorkerOptions(return_aggregate_stream=True)).body == {
        "output": chunks
    }
    assert rw.outcome_of_stream(chunks, None, rw.WorkerOptions()).body == {"output": []}
    failed = rw.outcome_of_stream(chunks, "chunk 2 failed", rw.WorkerOptions(return_aggregate_stream=True))
    assert failed.failed and _done(failed) == ("failed", None, "chunk 2 failed")
    assert rw.chunk_error({"error": "e"}) == "e"
    assert rw.chunk_error({"error": ""}) is None and rw.chunk_error("error") is None


def test_concurrency_modifier_is_fed_its_last_value() -> None:
    def ramp(current: int) -> int:
        return current + 1

    current = 1
    seen = []
    for _ in range(3):
        current = rw.next_concurrency(ramp, current, default=1)
        seen.append(current)
    assert seen == [2, 3, 4]
    assert rw.next_concurrency(None, 7, default=2) == 2
    assert rw.next_concurrency(lambda c: 0, 3, default=1) == 0  # take nothing for now
    assert rw.next_concurrency(lambda c: -5, 3, default=1) == 0
    assert rw.next_concurrency(lambda c: 10**9, 3, default=1) == rw.MAX_CONCURRENCY
    assert rw.next_concurrency(lambda c: 1 / 0, 3, default=1) == 3  # a failing modifier keeps the value
    assert rw.next_concurrency(lambda c: "many", 3, default=1) == 3


# Running a job -----------------------------------------------------------------------------------------


async def _run(
    h: Handler, job: dict[str, Any], executor: ThreadPoolExecutor
) -> tuple[rw.JobOutcome, list[Any]]:
    pushed: list[Any] = []

    async def push(chunk: Any) -> None:
        pushed.append(chunk)

    return await run_job(h, job, executor, push, "w1"), pushed


async def test_run_job_raise_and_error_chunk(executor: ThreadPoolExecutor) -> None:
    h = load_handler(f"{WORKERS}.module_start")
    out, _ = await _run(h, {"id": "j1", "input": {"raise": "bad input 7"}}, executor)
    assert out.failed and "bad input 7" in json.loads(out.body["error"])["error_message"]
    out, _ = await _run(h, {"id": "j2", "input": {"k": 1}, "attempt": 1}, executor)
    assert not out.failed and out.body["output"]["id"] == "j2" and out.body["output"]["input"] == {"k": 1}

    s = load_handler(f"{WORKERS}.stream_aggregate")
    out, pushed = await _run(s, {"id": "j3", "input": {"n": 4, "sleep_s": 0, "fail_at": 2}}, executor)
    assert out.failed and out.body == {"error": "chunk 2 failed"}
    assert pushed == [{"token": "t0"}, {"token": "t1"}]  # the error chunk is not streamed
    out, pushed = await _run(s, {"id": "j4", "input": {"n": 2, "sleep_s": 0}}, executor)
    assert out.body == {"output": pushed} and len(pushed) == 2


async def test_run_job_async_generator_aggregates(executor: ThreadPoolExecutor) -> None:
    h = load_handler(f"{WORKERS}.async_concurrent")
    out, pushed = await _run(h, {"id": "j1", "input": {"n": 3, "sleep_s": 0}}, executor)
    assert [c["token"] for c in pushed] == ["p-0", "p-1", "p-2"]
    assert out.body == {"output": pushed} and not out.failed


async def test_run_job_stream_exception_fails_with_traceback(
    modules: Any, executor: ThreadPoolExecutor
) -> None:
    name = modules(
        "gen_raises",
        """
        def handler(job):
            yield 1
            raise RuntimeError("engine died")
        """,
    )
    out, pushed = await _run(load_handler(name), {"id": "j", "input": {}}, executor)
    assert pushed == [1] and out.failed
    err = json.loads(out.body["error"])
    assert err["error_message"] == "engine died" and "RuntimeError" in err["error_traceback"]


async def test_a_chunk_the_store_cannot_keep_fails_the_job_as_ripples_fault(
    executor: ThreadPoolExecutor,
) -> None:
    """A stream whose chunk the store refused (full, or not answering) stops there: the job FAILED with
    the store's words, marked as Ripple's fault (the replica's health is not charged); the handler's own
    failures are not so marked."""
    said = "stream chunk 1 could not be stored, so the job stopped: the store is full"
    for ref in (f"{WORKERS}.stream_aggregate", f"{WORKERS}.async_concurrent"):
        pushed: list[Any] = []

        async def refuse_second(chunk: Any, pushed: list[Any] = pushed) -> None:
            if pushed:
                raise ChunkNotKept(said)
            pushed.append(chunk)

        job = {"id": "j", "input": {"n": 4, "sleep_s": 0}}
        out = await run_job(load_handler(ref), job, executor, refuse_second, "w1")
        assert out.failed and out.ripples_fault, ref
        assert out.body == {"error": said} and len(pushed) == 1
    h = load_handler(f"{WORKERS}.stream_aggregate")
    out, _ = await _run(h, {"id": "j", "input": {"n": 3, "sleep_s": 0, "fail_at": 1}}, executor)
    assert out.failed and not out.ripples_fault


async def test_a_handler_that_exits_fails_its_job_and_nothing_else(
    modules: Any, executor: ThreadPoolExecutor
) -> None:
    name = modules(
        "exits",
        """
        import sys

        def handler(job):
            sys.exit(2)

        async def in_async(job):
            sys.exit("bye")

        def in_stream(job):
            yield 1
            raise KeyboardInterrupt
        """,
    )
    out, _ = await _run(load_handler(name), {"id": "j", "input": {}}, executor)
    err = json.loads(out.body["error"])
    assert out.failed and err["error_message"].startswith("the handler called sys.exit(2): the job failed")
    assert "SystemExit" in err["error_type"] and "sys.exit(2)" in err["error_traceback"]
    out, _ = await _run(load_handler(f"{name}:in_async"), {"id": "j", "input": {}}, executor)
    assert out.failed and "sys.exit('bye')" in json.loads(out.body["error"])["error_message"]
    out, pushed = await _run(load_handler(f"{name}:in_stream"), {"id": "j", "input": {}}, executor)
    assert out.failed and pushed == [1] and "KeyboardInterrupt" in json.loads(out.body["error"])["error_type"]


async def test_output_that_is_not_json_fails_its_job_saying_why(
    modules: Any, executor: ThreadPoolExecutor
) -> None:
    name = modules(
        "not_json",
        """
        def handler(job):
            kind = job["input"]["kind"]
            if kind == "bytes":
                return b"png"
            if kind == "object":
                return {"model": object()}
            if kind == "error":
                return {"error": {"codes": {1, 2}}}
            if kind == "circular":
                out = []
                out.append(out)
                return out
            return {"ok": kind, "nan": float("nan")}

        def stream(job):
            yield "a"
            yield {"tensor": {1}}
            yield "never"
        """,
    )
    h = load_handler(name)
    reasons = {
        "bytes": "Object of type bytes is not JSON serializable",
        "object": "Object of type object is not JSON serializable",
        "error": "Object of type set is not JSON serializable",
        "circular": "Circular reference detected",
    }
    for kind, reason in reasons.items():
        out, _ = await _run(h, {"id": "j", "input": {"kind": kind}}, executor)
        assert out.failed and out.body == {"error": f"the handler's output is not JSON: {reason}"}, kind
    out, _ = await _run(h, {"id": "j", "input": {"kind": "fine"}}, executor)
    assert not out.failed and out.body["output"]["ok"] == "fine"
    assert out.output_json == '{"ok":"fine","nan":null}', "encoded once, here, as the store keeps it"
    out, pushed = await _run(load_handler(f"{name}:stream"), {"id": "j", "input": {}}, executor)
    assert out.failed and pushed == ["a"]
    assert out.body == {
        "error": "stream chunk 1 is not JSON: Object of type set is not JSON serializable"
    }  # fmt: skip


async def test_run_job_cancel_propagates(modules: Any, executor: ThreadPoolExecutor) -> None:
    name = modules(
        "slow_async",
        """
        import asyncio

        async def handler(job):
            await asyncio.sleep(30)
        """,
    )
    task = asyncio.get_running_loop().create_task(
        _run(load_handler(name), {"id": "j", "input": {}}, executor)
    )
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_example_worker_file_runs_as_a_replica_would(executor: ThreadPoolExecutor) -> None:
    h = load_handler("examples.runpod_worker")
    assert h.kind == "agen" and h.options.return_aggregate_stream and h.source == "start"
    assert rw.next_concurrency(h.options.concurrency_modifier, 4, default=1) == 4
    out, pushed = await _run(h, {"id": "j", "input": {"words": 3, "sleep_s": 0}}, executor)
    assert out.body == {"output": ["ripple", "runs", "runpod"]} and pushed == out.body["output"]
    bad, _ = await _run(h, {"id": "j", "input": {"words": "x"}}, executor)
    assert bad.failed and "'words' must be" in bad.body["error"]


def test_a_load_error_is_one_line_naming_the_place_of_a_syntax_error() -> None:
    """What a failed start shows (``ripple deploy``, the version's error, the worker): the last line, and
    for a syntax error, which names no place there, the file (as the package has it) and the line."""
    ray_report = (
        "The actor died because of an error raised in its creation task, ray::WorkerReplica.__init__()\n"
        '  File "/work/actors/replica.py", line 118, in __init__\n'
        "    self.handler = load_handler(cfg.handler)\n"
        '  File "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_0a1b2c/src/handler.py", '
        "line 3\n"
        "    def handler(job)\n"
        "                    ^\n"
        "SyntaxError: expected ':'\n"
    )
    assert error_line(ray_report) == "SyntaxError: expected ':' (src/handler.py, line 3)"
    plain = '  File "/opt/app/model.py", line 9\n    x = (\n        ^\nIndentationError: unexpected indent'
    assert error_line(plain) == "IndentationError: unexpected indent (/opt/app/model.py, line 9)"
    assert error_line("Traceback ...\nModuleNotFoundError: No module named 'torch'\n") == (
        "ModuleNotFoundError: No module named 'torch'"
    )
    pip = "Failed to set up the runtime env:\n    ERROR: No matching distribution found for nope==1.0\n"
    assert error_line(pip) == "ERROR: No matching distribution found for nope==1.0"
    assert error_line("x" * 500) == "x" * 300 and error_line("  \n") == ""
    # A queued job's waitReason says the same, with the place of a syntax error
    assert one_line(ray_report) == "SyntaxError: expected ':' (src/handler.py, line 3)"


def test_a_package_gone_with_its_ray_head_says_so_and_what_to_do() -> None:
    ray_report = (
        "ray.exceptions.RuntimeEnvSetupError: Failed to set up runtime environment.\n"
        "Traceback (most recent call last):\n  ...\n"
        "OSError: Failed to download runtime_env file package gcs://_ray_pkg_1411b49e.zip from the GCS to "
        "the Ray worker node. The package may have prematurely been deleted from the GCS due to a long "
        "upload time or a problem with Ray. Try setting the environment variable RAY_RUNTIME_ENV_..."
    )
    said = (
        "the code package gcs://_ray_pkg_1411b49e.zip is no longer in the Ray cluster (its head restarted "
        "since the deploy, and held it in memory only): deploy the folder again with `ripple deploy`"
    )
    assert error_line(ray_report) == said
    assert one_line(ray_report, limit=400) == said
