"""Shared pieces of the benchmark suite: timing, percentiles, result rows, the table, processes.

Everything here is plain Python with no Ray, Redis or HTTP dependency, except the process helpers at the
end, which use psutil (installed with Ray) to find every process a started command left behind.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

# ---------------------------------------------------------------------------------------------------------
# Numbers


def percentile(values: Sequence[float], q: float) -> float:
    """Return the q-th percentile (0 <= q <= 100) of values by linear interpolation between ranks.

    Raises ValueError on an empty sequence or a q outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Latency:
    """Summary of latency samples, in milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


def summarize_latency(samples_s: Sequence[float]) -> Latency:
    """Summarize samples given in seconds as a Latency in milliseconds."""
    ms = [s * 1000.0 for s in samples_s]
    return Latency(n=len(ms), p50_ms=percentile(ms, 50), p99_ms=percentile(ms, 99), mean_ms=sum(ms) / len(ms))


IDLE_SETTLE_S = 2.0
"""Pause before timing round trips: they are defined on an idle system, and a system that has just served a
burst is still busy for a moment (Ripple's queue actor works through the burst's take and result
notifications after the results are in the store). Taken before every peer's round trips alike."""


def time_calls(call: Callable[[], object], n: int, warmup: int = 10) -> Latency:
    """After IDLE_SETTLE_S, call `call` sequentially `warmup` times untimed, then `n` times timed; return
    the latency summary."""
    time.sleep(IDLE_SETTLE_S)
    for _ in range(warmup):
        call()
    samples_s: list[float] = []
    for _ in range(n):
        start_s = time.perf_counter()
        call()
        samples_s.append(time.perf_counter() - start_s)
    return summarize_latency(samples_s)


def time_in_turns(
    calls: Sequence[Callable[[], object]], n: int, turns: int = 5, warmup: int = 10
) -> list[Latency]:
    """As :func:`time_calls` for several calls at once: ``turns`` rounds, each a block of about n/turns
    sequential calls of each in order (n of each in all). Each call is timed over the same stretch of the
    machine's time, and none is timed just after another kind (what one leaves running would land on the
    next). One summary per call, in order."""
    time.sleep(IDLE_SETTLE_S)
    for call in calls:
        for _ in range(warmup):
            call()
    samples_s: list[list[float]] = [[] for _ in calls]
    for turn in range(turns):
        block = n // turns + (1 if turn < n % turns else 0)
        for call, samples in zip(calls, samples_s, strict=True):
            for _ in range(block):
                start_s = time.perf_counter()
                call()
                samples.append(time.perf_counter() - start_s)
    return [summarize_latency(samples) for samples in samples_s]


def rate_per_s(count: int, elapsed_s: float) -> float:
    """Return count / elapsed_s, or +inf for an elapsed time of zero."""
    return count / elapsed_s if elapsed_s > 0 else math.inf


# ---------------------------------------------------------------------------------------------------------
# Result rows and the table


@dataclass(frozen=True)
class Target:
    """A goal for a row.

    kind: "max_ratio" (Ripple / peer <= value), "min_ratio" (Ripple / peer >= value),
    "max" (Ripple <= value) or "min" (Ripple >= value).
    """

    kind: str
    value: float

    def describe(self, unit: str) -> str:
        """Human-readable form, such as '<= 1.5x peer' or '>= 5000 jobs/s'."""
        sign = "<=" if self.kind.startswith("max") else ">="
        if self.kind.endswith("ratio"):
            return f"{sign} {self.value:g}x peer"
        return f"{sign} {self.value:g} {unit}"


@dataclass(frozen=True)
class Row:
    """One line of the final table: a Ripple number, optionally a peer's number, and a target."""

    metric: str
    unit: str
    ripple: float | None
    peer_name: str = ""
    peer: float | None = None
    target: Target | None = None

    @property
    def ratio(self) -> float | None:
        """Ripple / peer, or None when either is missing or the peer is zero."""
        if self.ripple is None or self.peer is None or self.peer == 0:
            return None
        return self.ripple / self.peer

    @property
    def met(self) -> bool | None:
        """Whether the target is met; None when there is no target or a needed number is missing."""
        if self.target is None or self.ripple is None:
            return None
        kind, goal = self.target.kind, self.target.value
        if kind in ("max", "min"):
            return self.ripple <= goal if kind == "max" else self.ripple >= goal
        ratio = self.ratio
        if ratio is None:
            return None
        return ratio <= goal if kind == "max_ratio" else ratio >= goal

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form of the row."""
        return {
            "metric": self.metric,
            "unit": self.unit,
            "ripple": self.ripple,
            "peer_name": self.peer_name or None,
            "peer": self.peer,
            "ratio": self.ratio,
            "target": self.target.describe(self.unit) if self.target else None,
            "met": self.met,
        }


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """Render rows as a fixed-width text table: metric | Ripple | peer | ratio | target | met?."""
    header = ("metric", "Ripple", "peer", "ratio", "target", "met?")
    body: list[tuple[str, ...]] = []
    for row in rows:
        peer = f"{_fmt(row.peer)} ({row.peer_name})" if row.peer_name else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        met = {True: "yes", False: "NO", None: "-"}[row.met]
        target = row.target.describe(row.unit) if row.target else "-"
        body.append((f"{row.metric} [{row.unit}]", _fmt(row.ripple), peer, ratio, target, met))
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "-+-".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


# ---------------------------------------------------------------------------------------------------------
# Ports, HTTP readiness and processes


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll predicate until it is True (-> True) or timeout_s passes (-> False); exceptions count as False."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval_s)
    return False


class Launched:
    """A command started in its own session (process group) with its output in a log file.

    stop() ends the group and every descendant seen while it ran, plus any process whose working directory
    or command line lies under `owned_dir` (daemons that re-parent themselves, such as a Redis server).
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        owned_dir: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.owned_dir = owned_dir
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._seen: dict[int, psutil.Process] = {}

    def remember_descendants(self) -> None:
        """Record the current descendants, so that stop() finds them even after they re-parent."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self._seen[child.pid] = child

    def alive(self) -> bool:
        """Whether the launched command itself is still running."""
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        """Send sig to the command's process group (ignored when it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def stop(
        self, grace_s: float = 30.0, first_signal: int = signal.SIGINT, group: bool = True
    ) -> int | None:
        """Send first_signal to the group (or to the command only), wait up to grace_s, then SIGKILL the rest.

        Returns the command's exit code.
        """
        self.remember_descendants()
        if self.alive():
            if group:
                self.signal_group(first_signal)
            else:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(first_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the group, every remembered descendant and every process owned through owned_dir."""
        self.remember_descendants()
        self.signal_group(signal.SIGKILL)
        victims = list(self._seen.values())
        if self.owned_dir is not None:
            victims.extend(processes_under(self.owned_dir))
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=5)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._seen.clear()
        self._log.close()

    def log_tail(self, n_chars: int = 3000) -> str:
        """The last n_chars of the command's output."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""


def processes_under(directory: Path) -> list[psutil.Process]:
    """Processes of this user whose working directory or command line refers to a path under directory."""
    root = str(directory.resolve())
    found: list[psutil.Process] = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline", "uids"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid == me or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            cwd = ""
            with contextlib.suppress(psutil.Error):
                cwd = proc.cwd()
            if root in cmdline or cwd.startswith(root):
                found.append(proc)
    return found


@contextlib.contextmanager
def stopping(launched: Launched, grace_s: float = 30.0) -> Iterator[Launched]:
    """Context manager that always stops a Launched command on exit, even on error or Ctrl-C."""
    try:
        yield launched
    finally:
        launched.stop(grace_s=grace_s)


def http_client(
    base_url: str, headers: dict[str, str] | None = None, timeout_s: float = 120.0
) -> httpx.Client:
    """The HTTP client used for every HTTP measurement (Ripple and peers alike): HTTP/1.1, keep-alive."""
    return httpx.Client(
        base_url=base_url,
        headers=headers or {},
        timeout=timeout_s,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
    )


# ---------------------------------------------------------------------------------------------------------
# One benchmark run


def load_average() -> str:
    """The 1, 5 and 15 minute load averages and the core count, as one string."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


@dataclass
class Session:
    """A benchmark run's frame: its work dir, when it started and the load then, and how it ended."""

    tag: str
    workdir: Path
    load_before: str = field(default_factory=load_average)
    started_s: float = field(default_factory=time.perf_counter)
    error: str | None = None
    interrupted: bool = False
    _on_exit: list[Callable[[], None]] = field(default_factory=list)

    def on_exit(self, stop: Callable[[], None]) -> None:
        """Run ``stop`` when the run ends, however it ends (last registered, first run)."""
        self._on_exit.append(stop)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started_s

    def finish(self) -> int:
        """After the report: say how the run failed, if it did; the exit code."""
        if self.error:
            print(f"FAILED: {self.error}")
        return 1 if self.error else 0


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def bench_session(tag: str, *, keep: bool = False) -> Iterator[Session]:
    """Frame one run: SIGINT/SIGTERM interrupt it, a fresh work dir, and on the way out every ``on_exit``
    stop runs and the work dir goes (unless ``keep``). A failure is recorded in ``error`` (what was measured
    before it is still reported) and an interrupt in ``interrupted``; neither propagates."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    session = Session(tag, Path(tempfile.mkdtemp(prefix=f"ripple-{tag}-")))
    try:
        yield session
    except KeyboardInterrupt:
        session.interrupted = True
        print(f"[{tag}] interrupted; everything started has been stopped", flush=True)
    except Exception as exc:  # report what was measured before the failure
        session.error = f"{type(exc).__name__}: {exc}"
    finally:
        for stop in reversed(session._on_exit):
            with contextlib.suppress(Exception):
                stop()
        if keep:
            print(f"[{tag}] work dir kept: {session.workdir}")
        else:
            shutil.rmtree(session.workdir, ignore_errors=True)
