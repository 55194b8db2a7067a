"""What became of each endpoint's webhook deliveries lately: pure, clock passed in.

A job's webhook is sent after the job is final, retried with backoff, and then given up (``failed``), or
never sent because its address is refused by the webhook policy (``refused``). The job itself is not
changed by that: its result stays in ``/status``. So a delivery that never arrives must show up where the
user looks instead: ``ripple status`` and ``ripple doctor`` read :meth:`WebhookOutcomes.summary` through
``/api/v1/stats`` (the ``webhooks`` field of an endpoint's row).

Counts over the last :data:`WINDOW_S` seconds, at most :data:`KEPT_PER_ENDPOINT` outcomes an endpoint, and
the latest failure or refusal with its reason. The queue actor keeps them in memory and each outcome in the
store too (:func:`entry`, written in the same step that ends the delivery), so a restarted queue reads them
back (:meth:`WebhookOutcomes.restore`) and a failure shown before the restart is still shown after it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["delivered", "failed", "refused"]

WINDOW_S = 3600.0
"""How far back the counts reach."""

KEPT_PER_ENDPOINT = 1000
"""Most outcomes kept an endpoint (the oldest go first: counts then cover less than the window)."""


@dataclass(frozen=True)
class Problem:
    """One delivery that did not arrive: the job, ``failed`` or ``refused``, why, and when (wall clock, s)."""

    job_id: str
    outcome: Outcome
    reason: str
    at_s: float

    def wire(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "outcome": self.outcome, "reason": self.reason, "atS": self.at_s}


@dataclass
class _Endpoint:
    seen: deque[tuple[float, Outcome]] = field(default_factory=lambda: deque(maxlen=KEPT_PER_ENDPOINT))
    last_problem: Problem | None = None


class WebhookOutcomes:
    """Recent delivery outcomes per endpoint. Single-threaded (the queue actor's event loop)."""

    def __init__(self) -> None:
        self._by_endpoint: dict[str, _Endpoint] = {}

    def record(
        self, endpoint: str, outcome: Outcome, now_s: float, job_id: str = "", reason: str = ""
    ) -> None:
        """One delivery's end: ``delivered``, or ``failed`` (every attempt) / ``refused`` with ``reason``."""
        ep = self._by_endpoint.setdefault(endpoint, _Endpoint())
        ep.seen.append((now_s, outcome))
        if outcome != "delivered":
            ep.last_problem = Problem(job_id, outcome, reason, now_s)

    def restore(self, endpoint: str, entries: Iterable[str]) -> None:
        """Take the endpoint's stored ``entries`` (:func:`entry`, oldest first: every outcome the store
        keeps, this queue's included) as its outcomes, with the ones recorded here after the newest of them
        (a read that came late: the store was failing); an entry that does not parse is skipped."""
        parsed = [p for p in map(parse_entry, entries) if p is not None]
        ep = self._by_endpoint.pop(endpoint, None)
        newest_s = max((at_s for at_s, _, _, _ in parsed), default=float("-inf"))
        for at_s, outcome, job_id, reason in parsed:
            self.record(endpoint, outcome, at_s, job_id, reason)
        newer = [(at_s, outcome) for at_s, outcome in ep.seen if at_s > newest_s] if ep is not None else []
        if not newer:
            return
        kept = self._by_endpoint.setdefault(endpoint, _Endpoint())
        kept.seen.extend(newer)
        if ep is not None and ep.last_problem is not None and ep.last_problem.at_s > newest_s:
            kept.last_problem = ep.last_problem

    def forget(self, endpoint: str) -> None:
        """The endpoint was deleted."""
        self._by_endpoint.pop(endpoint, None)

    def summary(self, endpoint: str, now_s: float) -> dict[str, Any] | None:
        """Counts of each outcome over the last :data:`WINDOW_S` seconds (``windowS``), ``lastProblem``
        when the latest failure or refusal falls in it, and ``message`` (:func:`trouble`'s sentence) when
        any did not arrive; None when there were no deliveries in it."""
        ep = self._by_endpoint.get(endpoint)
        if ep is None:
            return None
        while ep.seen and ep.seen[0][0] < now_s - WINDOW_S:
            ep.seen.popleft()
        if not ep.seen:
            return None
        counts = {"delivered": 0, "failed": 0, "refused": 0}
        for _, outcome in ep.seen:
            counts[outcome] += 1
        out: dict[str, Any] = {**counts, "windowS": WINDOW_S}
        if ep.last_problem is not None and ep.last_problem.at_s >= now_s - WINDOW_S:
            out["lastProblem"] = ep.last_problem.wire()
        if (message := trouble(out)) is not None:
            out["message"] = message
        return out


def entry(outcome: Outcome, at_s: float, job_id: str, reason: str = "") -> str:
    """One outcome as the store keeps it (JSON)."""
    return json.dumps({"atS": at_s, "outcome": outcome, "jobId": job_id, "reason": reason})


def parse_entry(raw: str) -> tuple[float, Outcome, str, str] | None:
    """``(at_s, outcome, job_id, reason)`` of a stored :func:`entry`; None when it is not one."""
    try:
        doc = json.loads(raw)
        at_s, outcome = float(doc["atS"]), doc["outcome"]
        job_id, reason = str(doc.get("jobId") or ""), str(doc.get("reason") or "")
    except (ValueError, TypeError, KeyError):
        return None
    if outcome not in ("delivered", "failed", "refused"):
        return None
    return at_s, outcome, job_id, reason


def trouble(summary: Mapping[str, Any] | None) -> str | None:
    """What ``ripple status`` and ``ripple doctor`` say of an endpoint's ``webhooks`` summary (as
    :meth:`WebhookOutcomes.summary` writes it); None when every delivery in it arrived."""
    if not summary:
        return None
    failed, refused = int(summary.get("failed") or 0), int(summary.get("refused") or 0)
    if not failed and not refused:
        return None
    total = failed + refused + int(summary.get("delivered") or 0)
    why = [f"{failed} failed after every attempt"] if failed else []
    why += [f"{refused} refused by the webhook policy"] if refused else []
    minutes = float(summary.get("windowS") or WINDOW_S) / 60
    text = f"{failed + refused} of {total} webhook deliveries in the last {minutes:g} min did not arrive"
    text += f" ({', '.join(why)})"
    last = summary.get("lastProblem")
    if isinstance(last, Mapping):
        text += f"; latest: job {last.get('jobId')} {last.get('outcome')}: {last.get('reason')}"
    return text
