"""The health state machine of one worker replica: pure, clock passed in.

A replica's *lifecycle* (starting, idle, busy, draining, stopped) lives in ``workers``; its *health*
lives here, in front of the jobs it is handed, after the per-pod state machine of Cerebrium's Knative fork:

- PENDING (never checked) -> HEALTHY on its first success, -> QUARANTINED on a failure;
- HEALTHY -> QUARANTINED on a failure;
- QUARANTINED -> RECOVERING once its deadline has passed (``tick``), never earlier;
- RECOVERING -> HEALTHY on one success, -> QUARANTINED (next, longer backoff) on a failure;
- any serving state -> EVICTED on a failure after ``max_quarantines`` quarantines without a success.

What counts against a replica (``on_failure``) is what shows the replica, not a job, is broken: a failed
load, its process dying, a hang past the execution timeout (those the pool acts on by replacing it), and
``on_job_failed`` once *every one* of the last ``HealthPolicy.failed_jobs_to_quarantine`` jobs (default 5)
failed. A handler that raises on one bad input, or returns ``{"error": ...}``, fails that job only: the
replica stays as it was (a PENDING one keeps its single probation slot until a job succeeds).

Every event is a pure function ``(HealthRecord, now_s) -> HealthRecord``. Each event first applies
``tick`` (quarantine expiry), so a caller that forgot to tick still gets the right answer.

Invariants (each is a unit test):

- Quarantine is never cut short: until ``quarantined_until_s`` the replica stays QUARANTINED, whatever
  succeeds meanwhile (a job that was already in flight when the replica was quarantined may succeed; it
  changes nothing). A failure of such an in-flight job is counted in ``consecutive_failures`` but does not
  start a second quarantine: one incident, one quarantine.
- PENDING (never checked) is served, but its first job is its check: it gets one job slot, not its
  full concurrency (``serving_slots``), so a bad new replica risks one job.
- RECOVERING is on probation: one job slot; one success makes it HEALTHY and clears the counts; one
  failure sends it back to QUARANTINED with the next, longer backoff.
- A replica that was never HEALTHY follows ``HealthPolicy.new_backoff_s`` (0, 1, 1, 2, 5 s); one that was
  (``established``) follows ``established_backoff_s`` (1, 2, 5, 10, 20 s); the last value repeats.
- After ``max_quarantines`` quarantines without a success in between, the next failure EVICTS the
  replica: EVICTED is terminal here, the pool drains it and starts a replacement (``pool_plan``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from orchestrator.core.history import StateChange, appended, history_from_json, history_to_json


class HealthState(str, Enum):
    """Health of a replica. The values are the wire names."""

    PENDING = "pending"
    HEALTHY = "healthy"
    QUARANTINED = "quarantined"
    RECOVERING = "recovering"
    EVICTED = "evicted"


HEALTH_TRANSITIONS: Mapping[HealthState, frozenset[HealthState]] = {
    HealthState.PENDING: frozenset({HealthState.HEALTHY, HealthState.QUARANTINED, HealthState.EVICTED}),
    HealthState.HEALTHY: frozenset({HealthState.QUARANTINED, HealthState.EVICTED}),
    HealthState.QUARANTINED: frozenset({HealthState.RECOVERING}),
    HealthState.RECOVERING: frozenset({HealthState.HEALTHY, HealthState.QUARANTINED, HealthState.EVICTED}),
    HealthState.EVICTED: frozenset(),
}
"""Every state change the events below can make; ``_move`` refuses any other. EVICTED is reached from
PENDING or HEALTHY only when ``max_quarantines`` is 0 (the first failure evicts)."""

SERVING_STATES: frozenset[HealthState] = frozenset(
    {HealthState.PENDING, HealthState.HEALTHY, HealthState.RECOVERING}
)
"""States in which a replica may be handed jobs (PENDING and RECOVERING one at a time)."""

UNHEALTHY_STATES: frozenset[HealthState] = frozenset(HealthState) - SERVING_STATES
"""States in which a replica may not be handed jobs (QUARANTINED, EVICTED): what "unhealthy" means
everywhere (worker counts, ``ripple status``, doctor, the autoscaler). Derived: not a serving state."""

PROBATION_STATES: frozenset[HealthState] = frozenset({HealthState.PENDING, HealthState.RECOVERING})
"""States in which one job decides: the replica gets one job slot whatever its concurrency."""


HealthChange = StateChange[HealthState]
"""One health state change: when (seconds, caller's clock), from, to, and why."""


@dataclass(frozen=True)
class HealthPolicy:
    """Backoff schedules (seconds, the last value repeats), the eviction limit, and how many failed jobs in
    a row count against a replica (``failed_jobs_to_quarantine``: ``on_job_failed`` quarantines once the
    last N jobs all failed; 1 makes every failed job count).

    Raises ``ValueError`` (echoing the bad value) for an empty schedule, a negative or non-finite delay,
    a negative ``max_quarantines`` or a ``failed_jobs_to_quarantine`` below 1.
    """

    new_backoff_s: tuple[float, ...] = (0.0, 1.0, 1.0, 2.0, 5.0)
    established_backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    max_quarantines: int = 5
    failed_jobs_to_quarantine: int = 5

    def __post_init__(self) -> None:
        for name in ("new_backoff_s", "established_backoff_s"):
            schedule = getattr(self, name)
            if not schedule:
                raise ValueError(f"{name} ({schedule!r}) must not be empty")
            if any(not math.isfinite(d) or d < 0 for d in schedule):
                raise ValueError(f"{name} ({schedule!r}) must hold finite delays >= 0")
        if self.max_quarantines < 0:
            raise ValueError(f"max_quarantines ({self.max_quarantines}) must be >= 0")
        if self.failed_jobs_to_quarantine < 1:
            raise ValueError(f"failed_jobs_to_quarantine ({self.failed_jobs_to_quarantine}) must be >= 1")

    def backoff_s(self, quarantine_number: int, established: bool) -> float:
        """Delay of the ``quarantine_number``-th quarantine in a row (1-based), capped at the last value."""
        if quarantine_number < 1:
            raise ValueError(f"quarantine_number ({quarantine_number}) must be >= 1")
        schedule = self.established_backoff_s if established else self.new_backoff_s
        return schedule[min(quarantine_number, len(schedule)) - 1]


DEFAULT_HEALTH_POLICY = HealthPolicy()


@dataclass(frozen=True)
class HealthRecord:
    """Health of one replica (a value: every event returns a new one).

    ``consecutive_failures``: failed jobs since the last success. ``quarantine_count``: quarantines since
    the last success (decides the next backoff and eviction). ``quarantined_until_s``: end of the current
    quarantine (None unless QUARANTINED). ``established``: was HEALTHY at least once (picks the schedule).
    ``history``: the last ``core.history.HISTORY_LIMIT`` state changes, oldest first.
    """

    state: HealthState = HealthState.PENDING
    consecutive_failures: int = 0
    quarantine_count: int = 0
    quarantined_until_s: float | None = None
    established: bool = False
    history: tuple[HealthChange, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict with camelCase keys (the HTTP API's)."""
        return {
            "state": self.state.value,
            "consecutiveFailures": self.consecutive_failures,
            "quarantineCount": self.quarantine_count,
            "quarantinedUntil": self.quarantined_until_s,
            "established": self.established,
            "history": history_to_json(self.history),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HealthRecord:
        """Inverse of ``to_dict``. Raises ``ValueError`` on an unknown state or a missing key."""
        try:
            until = data["quarantinedUntil"]
            return cls(
                state=HealthState(data["state"]),
                consecutive_failures=int(data["consecutiveFailures"]),
                quarantine_count=int(data["quarantineCount"]),
                quarantined_until_s=None if until is None else float(until),
                established=bool(data["established"]),
                history=history_from_json(data.get("history", ()), HealthState),
            )
        except KeyError as exc:
            raise ValueError(f"health record is missing {exc.args[0]!r}") from exc


def _move(rec: HealthRecord, to: HealthState, now_s: float, reason: str, **changes: Any) -> HealthRecord:
    """The one place a state changes: checks the table, appends to the bounded history."""
    if to not in HEALTH_TRANSITIONS[rec.state]:  # a bug in this module, not a caller error
        raise AssertionError(f"health transition {rec.state.value} -> {to.value} is not in the table")
    history = appended(rec.history, HealthChange(now_s, rec.state, to, reason))
    return replace(rec, state=to, history=history, **changes)


def tick(rec: HealthRecord, now_s: float) -> HealthRecord:
    """Ends an expired quarantine: QUARANTINED with ``now_s >= quarantined_until_s`` -> RECOVERING.

    Anything else is returned unchanged (the same object), so ticking twice changes nothing.
    """
    if rec.state is not HealthState.QUARANTINED:
        return rec
    assert rec.quarantined_until_s is not None
    if now_s < rec.quarantined_until_s:
        return rec
    return _move(
        rec, HealthState.RECOVERING, now_s, "quarantine over: on probation", quarantined_until_s=None
    )


def on_success(rec: HealthRecord, now_s: float) -> HealthRecord:
    """A job (or check) on this replica succeeded.

    PENDING/RECOVERING -> HEALTHY with counts cleared and ``established`` set; HEALTHY stays, its failure
    count cleared; QUARANTINED (before its deadline) and EVICTED are unchanged.
    """
    rec = tick(rec, now_s)
    if rec.state is HealthState.HEALTHY:
        return rec if rec.consecutive_failures == 0 else replace(rec, consecutive_failures=0)
    if rec.state in PROBATION_STATES:
        reason = "first check passed" if rec.state is HealthState.PENDING else "probation job succeeded"
        return _move(
            rec,
            HealthState.HEALTHY,
            now_s,
            reason,
            consecutive_failures=0,
            quarantine_count=0,
            established=True,
        )
    return rec


def on_failure(
    rec: HealthRecord, now_s: float, policy: HealthPolicy = DEFAULT_HEALTH_POLICY, detail: str = ""
) -> HealthRecord:
    """A job (or check) on this replica failed for a reason that is the replica's, not the job's.

    (Whether a failure is the replica's — a crash, an out-of-memory, a handler that cannot load — rather
    than the user's input is the caller's call; a handler raising on bad input should not quarantine.)

    PENDING/HEALTHY/RECOVERING -> QUARANTINED until ``now_s + backoff``, or -> EVICTED when
    ``quarantine_count`` already reached ``policy.max_quarantines``. QUARANTINED counts the failure and
    keeps its deadline; EVICTED is unchanged. ``detail`` is added to the history's reason.
    """
    rec = tick(rec, now_s)
    failures = rec.consecutive_failures + 1
    if rec.state is HealthState.EVICTED:
        return rec
    if rec.state is HealthState.QUARANTINED:
        return replace(rec, consecutive_failures=failures)
    suffix = f": {detail}" if detail else ""
    if rec.quarantine_count >= policy.max_quarantines:
        return _move(
            rec,
            HealthState.EVICTED,
            now_s,
            f"failed after {rec.quarantine_count} quarantines in a row{suffix}",
            consecutive_failures=failures,
            quarantined_until_s=None,
        )
    number = rec.quarantine_count + 1
    delay_s = policy.backoff_s(number, rec.established)
    return _move(
        rec,
        HealthState.QUARANTINED,
        now_s,
        f"quarantine {number} for {delay_s:g} s{suffix}",
        consecutive_failures=failures,
        quarantine_count=number,
        quarantined_until_s=now_s + delay_s,
    )


def on_job_failed(
    rec: HealthRecord, now_s: float, policy: HealthPolicy = DEFAULT_HEALTH_POLICY, detail: str = ""
) -> HealthRecord:
    """A job on this replica FAILED (the handler raised or returned an error): counts against the replica
    only when every one of the last ``policy.failed_jobs_to_quarantine`` jobs failed.

    Below that, only ``consecutive_failures`` grows (the state is unchanged: a bad input is the client's
    problem). At the threshold (and after it, e.g. on probation after the quarantine it caused) this is
    :func:`on_failure`, with ``detail`` prefixed by the count.
    """
    rec = tick(rec, now_s)
    failures = rec.consecutive_failures + 1
    if failures < policy.failed_jobs_to_quarantine and rec.state is not HealthState.EVICTED:
        return replace(rec, consecutive_failures=failures)
    why = f"last {failures} jobs failed" + (f" ({detail})" if detail else "")
    return on_failure(rec, now_s, policy, why)


def serving_slots(rec: HealthRecord, concurrency: int, now_s: float) -> int:
    """How many jobs at once health allows: ``concurrency`` when HEALTHY, 1 on probation (PENDING,
    RECOVERING, including a quarantine that has expired by ``now_s``), 0 otherwise."""
    state = tick(rec, now_s).state
    if state is HealthState.HEALTHY:
        return concurrency
    if state in PROBATION_STATES:
        return min(1, concurrency)
    return 0


def can_serve(rec: HealthRecord, now_s: float) -> bool:
    """True when the replica may be handed a job at ``now_s``: PENDING (the job is its check), HEALTHY,
    RECOVERING, or QUARANTINED past its deadline (it is RECOVERING once ticked). False otherwise."""
    return tick(rec, now_s).state in SERVING_STATES


LOOP_BLOCKED = (
    "An async handler runs on the replica's event loop: blocking code in one (a model call that does not "
    "await) holds up the replica's takes, results and job stops until it returns. Make the handler a plain "
    "`def` (it then runs in a thread), or await the blocking call in a thread "
    "(`await asyncio.to_thread(...)`)."
)
"""What to do, recorded with a replica lost for a blocked event loop (the pool's last errors, the worker)."""


def keepalive_due(blocked_s: float, heartbeat_s: float) -> bool:
    """Whether a replica's keepalive thread heartbeats for its event loop: the loop has not ticked for
    ``blocked_s``, two heartbeat periods or more (it ticks every half period: not just a slow step)."""
    return blocked_s >= 2 * heartbeat_s


def unanswered_verdict(
    live: Mapping[str, Any] | None, silent_s: float, heartbeat_s: float, unresponsive_s: float
) -> tuple[str, str | None] | None:
    """Whether a ready replica whose ``status`` went unanswered is lost: ``(reason, advice)``, or None to
    leave it. ``live`` is its ``liveness`` (answered off its event loop; None when that went unanswered
    too), ``silent_s`` how long since it last answered either.

    - Blocked in jobs that still run: left alone (its keepalive thread holds their leases, as the worker
      SDK's heartbeat thread does).
    - Blocked longer than a heartbeat timeout (``4 * heartbeat_s``, not just slow) with every held job
      stopped meanwhile (timed out, cancelled: nothing can stop them on a blocked loop): lost, with
      :data:`LOOP_BLOCKED` as the advice.
    - Its loop ended: lost. Answering nothing at all for longer than ``unresponsive_s``: lost.
    """
    if live is None:
        return (f"unresponsive for {silent_s:.0f} s; replaced", None) if silent_s > unresponsive_s else None
    if not live["loopRunning"]:
        return "its event loop ended; replaced", None
    blocked_s, held = float(live["blockedS"]), int(live["held"])
    if blocked_s > 4 * heartbeat_s and held and int(live["stoppedWhileBlocked"]) >= held:
        return f"hung: its event loop blocked {blocked_s:.0f} s in jobs stopped since; replaced", LOOP_BLOCKED
    return None
