"""RunPod worker files in a replica: ``runpod.serverless.start(config)`` captured, the worker SDK's options.

A RunPod worker file ends with ``runpod.serverless.start({"handler": fn, ...})``, at module level or under
``if __name__ == "__main__":``. Outside RunPod that call installs signal handlers (which fails off the
main thread, as in a Ray actor) and runs the SDK's own take loop. In a replica Ripple instead:

- :func:`install` (called once per replica process, before the user's module is imported) patches the
  *SDK* the moment it is imported, never the user's file: ``runpod.serverless.start`` records its config
  and returns at once, and ``runpod.serverless.progress_update`` hands progress to the replica (see
  :func:`set_progress_sink`). Nothing of the SDK is imported unless the user's module imports it.
- :func:`capture_starts` collects the configs passed to ``start`` while a module is imported.
- :func:`main_block_config` finds the config of a ``__main__``-guarded file (whose import never calls
  ``start``): the argument of the ``start(...)`` call in its ``if __name__ == "__main__":`` block,
  evaluated (that expression only) in the module's namespace.

The SDK's semantics (runpod 1.12 ``rp_job``/``rp_scale``), as pure functions the replica applies:

- :class:`WorkerOptions` ``concurrency_modifier``, ``return_aggregate_stream``, ``refresh_worker``;
- :func:`next_concurrency` the modifier, called with the current value before each take;
- :func:`outcome_of_return`, :func:`outcome_of_stream`, :func:`outcome_of_exception`: what a handler's
  return, stream or exception makes of the job (the ``job-done`` body, failed or not, replace the worker
  or not); every failure is a :func:`failed_outcome`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.abc
import importlib.machinery
import inspect
import json
import logging
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from orchestrator.core.errors import InvalidInput

log = logging.getLogger("ripple.runpod_worker")

SDK_MODULE = "runpod.serverless"
MAX_CONCURRENCY = 1000
"""Upper bound of what a ``concurrency_modifier`` may ask for (the endpoint's own ``concurrency`` limit)."""

START_KEYS = frozenset({"handler", "concurrency_modifier", "return_aggregate_stream", "refresh_worker"})
"""Keys of the ``start`` config Ripple acts on; others (``rp_args``, SDK test hooks) are ignored."""


@dataclass(frozen=True)
class WorkerOptions:
    """The worker SDK's options from a ``start`` config (defaults: those of the SDK)."""

    concurrency_modifier: Callable[[int], Any] | None = None
    return_aggregate_stream: bool = False
    refresh_worker: bool = False


@dataclass(frozen=True)
class StartConfig:
    """A handler and its options, as found in a worker file; ``source`` says how it was found."""

    handler: Callable[..., Any]
    options: WorkerOptions
    source: str


def parse_start_config(config: Any, where: str) -> StartConfig:
    """Validate what was passed to ``runpod.serverless.start`` (``where`` names the module for errors).

    Raises:
        InvalidInput: ``config`` is not a dict, has no callable ``handler``, or a non-callable
            ``concurrency_modifier``.
    """
    if not isinstance(config, dict):
        kind = type(config).__name__
        raise InvalidInput(f"{where}: runpod.serverless.start() was given {kind}, not a dict")
    handler = config.get("handler")
    if not callable(handler):
        raise InvalidInput(f"{where}: runpod.serverless.start() config has no callable 'handler'")
    modifier = config.get("concurrency_modifier")
    if modifier is not None and not callable(modifier):
        raise InvalidInput(f"{where}: 'concurrency_modifier' in the start() config is not callable")
    options = WorkerOptions(
        concurrency_modifier=modifier,
        return_aggregate_stream=bool(config.get("return_aggregate_stream", False)),
        refresh_worker=bool(config.get("refresh_worker", False)),
    )
    return StartConfig(handler, options, "start")


# Capture --------------------------------------------------------------------------------------------

_captured: list[list[Any]] = []  # one list per active capture_starts(), innermost last
_by_module: dict[str, Any] = {}  # module name of the caller -> the first config it passed to start()
_progress_sink: Callable[[dict[str, Any], Any], None] | None = None


def _start(config: Any) -> None:
    """Stands in for ``runpod.serverless.start`` in a replica: records the config, runs nothing."""
    caller = str(sys._getframe(1).f_globals.get("__name__", ""))
    _by_module.setdefault(caller, config)
    if _captured:
        _captured[-1].append(config)
    log.info("runpod.serverless.start() from %s captured; the SDK's own loop does not run", caller)


def started_config(module_name: str) -> Any | None:
    """The config module ``module_name`` passed to ``start`` when it was imported in this process, or
    None (also right for a module imported again from ``sys.modules``, whose code does not run twice)."""
    return _by_module.get(module_name)


def _progress_update(job: dict[str, Any], progress: Any) -> None:
    """Stands in for ``runpod.serverless.progress_update`` in a replica: hands it to the replica's sink."""
    sink = _progress_sink
    if sink is None:
        log.warning("progress_update() outside a Ripple replica's job; dropped")
        return
    sink(job, progress)


def set_progress_sink(sink: Callable[[dict[str, Any], Any], None] | None) -> None:
    """Where ``progress_update(job, data)`` goes in this process (the replica), or None to drop it.

    The sink may be called from any thread (sync handlers run in an executor) and must not block.
    """
    global _progress_sink
    _progress_sink = sink


def _patch(sdk: ModuleType) -> None:
    """Replace ``start`` and ``progress_update`` in the imported SDK package (and the module that defines
    ``progress_update``, for ``from runpod.serverless.modules.rp_progress import progress_update``)."""
    sdk.start = _start  # type: ignore[attr-defined]
    sdk.progress_update = _progress_update  # type: ignore[attr-defined]
    progress_module = sys.modules.get(f"{SDK_MODULE}.modules.rp_progress")
    if progress_module is not None:
        progress_module.progress_update = _progress_update  # type: ignore[attr-defined]


class _PatchingLoader(importlib.abc.Loader):
    """Runs the SDK package's own loader, then patches the module before anyone else sees it."""

    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)
        _patch(module)


class _SdkFinder(importlib.abc.MetaPathFinder):
    """Finds ``runpod.serverless`` as the path finder would, with a patching loader."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != SDK_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> None:
    """Make ``runpod.serverless.start``/``progress_update`` the replica's stand-ins in this process.

    Idempotent. Patches at once when the SDK is already imported, else when it is first imported.
    """
    if SDK_MODULE in sys.modules:
        _patch(sys.modules[SDK_MODULE])
    if not any(isinstance(f, _SdkFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SdkFinder())


@contextlib.contextmanager
def capture_starts() -> Iterator[list[Any]]:
    """Collect the configs passed to ``runpod.serverless.start`` inside the block (call :func:`install`
    first)."""
    configs: list[Any] = []
    _captured.append(configs)
    try:
        yield configs
    finally:
        _captured.remove(configs)


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not isinstance(test, ast.Compare) or len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    has_name = any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
    has_main = any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    return has_name and has_main


def _start_call_arg(block: Sequence[ast.stmt]) -> ast.expr | None:
    """The first argument of the first ``start(...)`` / ``X.start(...)`` call in ``block``."""
    for stmt in block:
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name == "start":
                return node.args[0]
    return None


def main_block_config(module: ModuleType) -> Any | None:
    """The config a ``__main__``-guarded worker file would pass to ``start``, or None.

    Reads the module's source, finds ``if __name__ == "__main__":`` at top level and the first
    ``start(...)`` call in it, and evaluates that call's first argument in the module's namespace. None
    when there is no source, no such block or call, or the argument names something the block itself
    defines (evaluating it then raises; the error is logged).
    """
    with contextlib.suppress(OSError, TypeError):
        source = inspect.getsource(module)
        tree = ast.parse(source)
        for stmt in tree.body:
            if isinstance(stmt, ast.If) and _is_main_guard(stmt.test):
                arg = _start_call_arg(stmt.body)
                if arg is None:
                    return None
                code = compile(ast.Expression(arg), getattr(module, "__file__", "<module>"), "eval")
                try:
                    return eval(code, vars(module))
                except Exception:
                    log.warning(
                        "%s: the start() config in its __main__ block cannot be evaluated on import",
                        module.__name__,
                        exc_info=True,
                    )
                    return None
    return None


# The SDK's job semantics ------------------------------------------------------------------------------


def next_concurrency(modifier: Callable[[int], Any] | None, current: int, default: int) -> int:
    """Jobs a replica may hold after the next take decision, as the SDK's ``JobScaler.set_scale`` does:
    ``modifier(current)``; without one, ``default`` (the endpoint's ``concurrency``).

    The result is clamped to ``0..MAX_CONCURRENCY`` (0: take nothing for now, as in the SDK). A modifier
    that raises or returns a non-number keeps ``current`` (the SDK's loop would die instead).
    """
    if modifier is None:
        return default
    try:
        value = int(modifier(current))
    except Exception:
        log.warning("concurrency_modifier(%d) failed; keeping %d", current, current, exc_info=True)
        return current
    return max(0, min(MAX_CONCURRENCY, value))


@dataclass(frozen=True)
class JobOutcome:
    """What one handler run makes of its job: the ``job-done`` body (the SDK's shape), whether the job
    FAILED, and whether the worker must be replaced after it (``refresh_worker``)."""

    body: dict[str, Any]
    failed: bool
    refresh: bool
    output_json: str | None = None
    """The body's output as the store keeps it (``jobs.encode_output``), when it was encoded while it was
    checked (:func:`orchestrator.core.handlers.run_job`); None: not encoded yet."""
    ripples_fault: bool = False
    """The job failed for Ripple's reason, not the handler's (the job store refused its stream): the
    replica's health is not charged for it."""


def outcome_of_return(output: Any, options: WorkerOptions) -> JobOutcome:
    """A plain (sync or async) handler returned ``output`` (the SDK's ``run_job``).

    A dict loses its ``error`` and ``refresh_worker`` keys: a truthy ``error`` fails the job with it
    (what is left is still the output), a truthy ``refresh_worker`` replaces the worker after the job. An
    output that ends up ``{}`` is no output. ``options.refresh_worker`` replaces the worker after any job.
    """
    body: dict[str, Any] = {}
    refresh = options.refresh_worker
    if isinstance(output, dict):
        rest = dict(output)
        error = rest.pop("error", None)
        refresh = bool(rest.pop("refresh_worker", None)) or refresh
        if rest:
            body["output"] = rest
        if error:
            body["error"] = error if isinstance(error, str) else json.dumps(error)
    else:
        body["output"] = output
    if refresh:
        body["stopPod"] = True
    return JobOutcome(body, "error" in body, refresh)


def chunk_error(chunk: Any) -> str | None:
    """A generator chunk that is a dict with a truthy ``error`` ends the stream and fails the job (the
    SDK's ``handle_job``); returns that error as text, else None."""
    if isinstance(chunk, dict) and chunk.get("error"):
        return str(chunk["error"])
    return None


def outcome_of_stream(chunks: Sequence[Any], error: str | None, options: WorkerOptions) -> JobOutcome:
    """A generator handler ended: ``chunks`` were streamed; ``error`` (from :func:`chunk_error` or an
    exception) fails the job. The final output is the list of chunks with ``return_aggregate_stream``,
    else ``[]`` (posted with ``isStream=true``, as the SDK does)."""
    if error:
        return failed_outcome(error, options)
    body: dict[str, Any] = {"output": list(chunks) if options.return_aggregate_stream else []}
    if options.refresh_worker:
        body["stopPod"] = True
    return JobOutcome(body, False, options.refresh_worker)


def failed_outcome(error: str, options: WorkerOptions) -> JobOutcome:
    """The job FAILED with ``error`` (its text as sent); the worker carries on, replaced after the job
    only under ``refresh_worker``."""
    body: dict[str, Any] = {"error": error}
    if options.refresh_worker:
        body["stopPod"] = True
    return JobOutcome(body, True, options.refresh_worker)


def exception_error(exc: BaseException, worker_id: str) -> str:
    """A handler exception as the job's error: the SDK's JSON text with ``error_type``,
    ``error_message`` and ``error_traceback``. A ``sys.exit()`` in a handler is the job's failure too: its
    message says so (the replica does not exit)."""
    message = str(exc)
    if isinstance(exc, SystemExit):
        message = f"the handler called sys.exit({exc.code!r}): the job failed, the worker carries on"
    return json.dumps(
        {
            "error_type": str(type(exc)),
            "error_message": message,
            "error_traceback": "".join(traceback.format_exception(exc)),
            "worker_id": worker_id,
        }
    )


def not_json_outcome(problem: str, options: WorkerOptions) -> JobOutcome:
    """The handler's output (or its ``error``, or a stream chunk) is not JSON (``problem``: why, as
    ``json.dumps`` said): the job FAILED saying so; the worker carries on."""
    return failed_outcome(f"the handler's output is not JSON: {problem}", options)


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be sent as JSON (``json.dumps``'s own words: a type it cannot encode, a
    circular reference, nesting too deep); None when it can."""
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        return str(exc)
    return None


def outcome_of_exception(exc: BaseException, worker_id: str, options: WorkerOptions) -> JobOutcome:
    """A plain handler raised ``exc``: the job FAILED with the SDK's error JSON; the worker carries on
    (replaced only under ``refresh_worker``)."""
    return failed_outcome(exception_error(exc, worker_id), options)
