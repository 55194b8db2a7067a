"""What the dispatcher (:mod:`orchestrator.core.dispatch`) is given: a clock, its settings and notifiers.

Narrow interfaces so the queue's logic runs without Ray, Prometheus, HTTP or a real clock: the JobQueue actor
passes the system clock, the Prometheus/Ray metrics, a Ray lookup of the autoscaler and the webhook sender;
unit tests pass fakes. Every notifier is fire-and-forget: it never raises into dispatch and never blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class Clock(Protocol):
    """Time, passed in (core never reads a clock)."""

    def now_s(self) -> float:
        """Wall-clock time, seconds since the epoch (stored timestamps, job ages)."""
        ...

    def monotonic_s(self) -> float:
        """A clock that never goes back, seconds (long-poll deadlines, throttles, durations)."""
        ...


class DispatchSettings(Protocol):
    """The dispatcher's timings; :class:`orchestrator.config.QueueConfig` satisfies it."""

    @property
    def heartbeat_timeout_s(self) -> float:
        """A worker silent this long is lost; its leases are taken back."""
        ...

    @property
    def lease_grace_s(self) -> float:
        """An outside worker that stops reporting a leased job this long loses it."""
        ...

    @property
    def take_wait_s(self) -> float:
        """Default long-poll of ``take``."""
        ...

    @property
    def stop_wait_s(self) -> float:
        """Default long-poll of ``stop_poll``."""
        ...

    @property
    def runsync_wait_s(self) -> float:
        """Default hold of ``runsync`` / ``wait_final``."""
        ...

    @property
    def keep_versions(self) -> int:
        """How many of each endpoint's latest versions keep their code package (besides the one serving
        and one rolling out)."""
        ...

    @property
    def package_grace_s(self) -> float:
        """How long an uploaded code package that no version names yet is kept."""
        ...

    @property
    def keep_results_s(self) -> float:
        """How long a finished job is kept after it ended (0: for ever)."""
        ...


class AutoscalerNotifier(Protocol):
    """Wakes the autoscaler when work arrives that no worker waits for, or an endpoint it manages (one
    with a handler) is created, so that its pool starts before the first job."""

    def work_arrived(self, endpoint: str) -> None:
        """Ask for a tick now for ``endpoint`` (best effort, non-blocking, never raises)."""
        ...


class WebhookKicker(Protocol):
    """The webhook deliverer (it does the HTTP; pending deliveries are in the store)."""

    def kick(self) -> None:
        """A delivery may be pending: look now rather than at the next poll."""
        ...

    def outcomes(self, endpoint: str, now_s: float) -> dict[str, Any] | None:
        """What became of the endpoint's deliveries lately (``WebhookOutcomes.summary``); None: none."""
        ...

    def forget(self, endpoint: str) -> None:
        """The endpoint was deleted."""
        ...


class DispatchMetrics(Protocol):
    """Where the dispatcher counts what happens. Labels are endpoints, states and short reasons."""

    def submitted(self, endpoint: str, n: int) -> None: ...

    def finished(self, endpoint: str, status: str, n: int = 1) -> None:
        """``n`` jobs reached the final ``status`` (a JobStatus value)."""
        ...

    def retried(self, endpoint: str) -> None: ...

    def lease_lost(self, endpoint: str, reason: str) -> None:
        """A lease was taken back; ``reason`` may be free text (the sink bounds it to a category)."""
        ...

    def result_dropped(self, endpoint: str, reason: str) -> None: ...

    def redelivered(self, endpoint: str) -> None:
        """A replica whose own take from the store failed was handed its jobs again (a partition from
        Redis, or Redis failing it)."""
        ...

    def queue_time(self, endpoint: str, seconds: float) -> None: ...

    def execution_time(self, endpoint: str, seconds: float) -> None: ...

    def worker_states(self, views: Sequence[Mapping[str, Any]]) -> None:
        """A periodic snapshot of every worker's view (for a workers-by-state gauge)."""
        ...


class PackageShelf(Protocol):
    """Where code packages live (the Ray cluster's GCS, and ``ripple up``'s copies in its data dir)."""

    def delete(self, uri: str) -> bool:
        """Delete package ``uri`` wherever it is kept (fast: a key and a file). True when it is gone (or
        was already); False when it could not be deleted (logged; never raises)."""
        ...
