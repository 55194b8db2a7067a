"""Sampling profiles of a running actor process with py-spy (installed from PyPI: `pip install py-spy`).

record() attaches `py-spy record --gil --nonblocking --format raw` to a PID for the length of a `with`
block; summarize() turns py-spy's collapsed stacks into the functions that hold the GIL most, by own time
(the leaf frame) and by inclusive time (anywhere on the stack), as shares of all samples taken.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_FRAME_LINE = re.compile(r":\d+\)$")
# An async Ray actor's event loop runs in a plain threading.Thread ("AsyncIO Thread: default").
EVENT_LOOP_FRAME = "Thread.run (threading.py)"
# Frames on nearly every stack of an async actor (thread start-up, Ray's tracing wrapper): left out of the
# inclusive list, where they would only push the informative frames down.
_GENERIC = ("(threading.py)", "(ray/util/tracing/tracing_helper.py)", "(asyncio/events.py)")


@dataclass(frozen=True)
class Share:
    """A function ("name (file)") and the fraction of samples it accounts for."""

    function: str
    share: float


@dataclass(frozen=True)
class ProfileSummary:
    """What a recording shows: GIL-holding samples, the wall time and rate, the top functions."""

    samples: int
    seconds: float
    rate_hz: int
    self_top: tuple[Share, ...]
    inclusive_top: tuple[Share, ...]
    wall: bool = False

    @property
    def busy_share(self) -> float:
        """Samples holding the GIL / samples possible: how busy the process's Python was (0 to 1)."""
        possible = self.seconds * self.rate_hz
        return self.samples / possible if possible > 0 else 0.0

    def format(self, title: str, top: int = 12) -> str:
        if self.wall:
            head = f"{title}: {self.samples} event loop samples (idle included) in {self.seconds:.1f} s"
        else:
            head = (
                f"{title}: {self.samples} samples holding the GIL in {self.seconds:.1f} s at "
                f"{self.rate_hz} Hz (Python busy {self.busy_share:.0%} of the wall time)"
            )
        lines = [
            head,
            "  own time (leaf frame):",
            *(f"    {s.share:6.1%}  {s.function}" for s in self.self_top[:top]),
            "  inclusive (anywhere on the stack):",
            *(f"    {s.share:6.1%}  {s.function}" for s in self.inclusive_top[:top]),
        ]
        return "\n".join(lines)


def _frame_name(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (path/file.py)'."""
    return _FRAME_LINE.sub(")", frame.strip())


def summarize(
    collapsed: str, seconds: float, rate_hz: int, top: int = 25, wall: bool = False
) -> ProfileSummary:
    """Aggregate py-spy raw output (`frame;frame;... count` per line) by function, ignoring line numbers.

    wall=True keeps only the stacks of the thread that runs an async actor's event loop (rooted at
    EVENT_LOOP_FRAME): the idle threads of a Ray worker would otherwise swamp the shares."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if f.strip()]
        if not frames or (wall and EVENT_LOOP_FRAME not in frames[:4]):
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            if not name.endswith(_GENERIC):
                inclusive[name] += count

    def shares(counter: Counter[str]) -> tuple[Share, ...]:
        return tuple(Share(name, n / total) for name, n in counter.most_common(top)) if total else ()

    return ProfileSummary(total, seconds, rate_hz, shares(own), shares(inclusive), wall)


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter or on PATH, else None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """Filled in when the `record` block ends: the summary, or why there is none."""

    def __init__(self) -> None:
        self.summary: ProfileSummary | None = None
        self.error: str | None = None


@contextlib.contextmanager
def record(pid: int, out_path: Path, rate_hz: int = 200, wall: bool = False) -> Iterator[Recording]:
    """Sample pid with py-spy for the duration of the block; the Recording holds the summary afterwards.

    Sampling is non-blocking (the target is never paused). By default only threads holding the GIL count
    (where the CPU goes); wall=True counts idle threads too (where the wall time goes: a blocking call
    made on an event loop shows up there).
    """
    result = Recording()
    exe = py_spy()
    if exe is None:
        result.error = "py-spy not installed (pip install py-spy)"
        yield result
        return
    argv = [
        exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw",
        "--idle" if wall else "--gil", "--nonblocking", "-o", str(out_path),
    ]  # fmt: skip
    log_path = out_path.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(0.5)  # attach before the load starts
    start_s = time.perf_counter()
    try:
        yield result
    finally:
        seconds = time.perf_counter() - start_s
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out_path.exists():
            result.summary = summarize(out_path.read_text(), seconds, rate_hz, wall=wall)
        else:
            result.error = f"py-spy wrote nothing: {log_path.read_text(errors='replace')[-500:]}"
