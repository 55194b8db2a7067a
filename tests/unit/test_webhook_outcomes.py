"""Recent webhook delivery outcomes per endpoint (``orchestrator.core.webhook_outcomes``): what ``ripple
status`` and ``ripple doctor`` show of deliveries that never arrived."""

from __future__ import annotations

import pytest

from orchestrator.core.webhook_outcomes import (
    KEPT_PER_ENDPOINT,
    WINDOW_S,
    WebhookOutcomes,
    entry,
    parse_entry,
    trouble,
)

pytestmark = pytest.mark.timeout(10)


def test_counts_each_outcome_and_keeps_the_latest_problem() -> None:
    seen = WebhookOutcomes()
    seen.record("ep", "delivered", 100.0)
    seen.record("ep", "failed", 101.0, "job-1", "HTTP 503")
    seen.record("ep", "refused", 102.0, "job-2", "address 10.0.0.1 is private")
    seen.record("ep", "delivered", 103.0)
    seen.record("other", "delivered", 103.0)
    assert seen.summary("ep", 104.0) == {
        "delivered": 2,
        "failed": 1,
        "refused": 1,
        "windowS": WINDOW_S,
        "lastProblem": {
            "jobId": "job-2",
            "outcome": "refused",
            "reason": "address 10.0.0.1 is private",
            "atS": 102.0,
        },
        "message": "2 of 4 webhook deliveries in the last 60 min did not arrive (1 failed after every "
        "attempt, 1 refused by the webhook policy); latest: job job-2 refused: address 10.0.0.1 is private",
    }
    assert seen.summary("other", 104.0) == {"delivered": 1, "failed": 0, "refused": 0, "windowS": WINDOW_S}
    assert seen.summary("never", 104.0) is None


def test_outcomes_older_than_the_window_are_dropped() -> None:
    seen = WebhookOutcomes()
    seen.record("ep", "failed", 0.0, "old", "ConnectError")
    seen.record("ep", "delivered", WINDOW_S / 2)
    summary = seen.summary("ep", WINDOW_S + 1)
    assert summary is not None and (summary["failed"], summary["delivered"]) == (0, 1)
    assert "lastProblem" not in summary, "the failure is older than the window"
    assert seen.summary("ep", 2 * WINDOW_S) is None, "nothing left in the window"


def test_at_most_so_many_outcomes_are_kept_an_endpoint() -> None:
    seen = WebhookOutcomes()
    seen.record("ep", "failed", 1.0, "first", "HTTP 500")
    for _ in range(KEPT_PER_ENDPOINT):
        seen.record("ep", "delivered", 2.0)
    summary = seen.summary("ep", 3.0)
    assert summary is not None and (summary["failed"], summary["delivered"]) == (0, KEPT_PER_ENDPOINT)
    assert summary["lastProblem"]["jobId"] == "first", "the latest problem is kept apart from the counts"


def test_a_deleted_endpoint_is_forgotten() -> None:
    seen = WebhookOutcomes()
    seen.record("ep", "failed", 1.0, "j", "HTTP 500")
    seen.forget("ep")
    assert seen.summary("ep", 2.0) is None


def test_trouble_says_what_did_not_arrive_and_the_latest_reason() -> None:
    assert trouble(None) is None
    assert trouble({"delivered": 3, "failed": 0, "refused": 0, "windowS": WINDOW_S}) is None
    summary = {
        "delivered": 7,
        "failed": 2,
        "refused": 1,
        "windowS": 3600.0,
        "lastProblem": {"jobId": "j9", "outcome": "failed", "reason": "HTTP 503", "atS": 5.0},
    }
    assert trouble(summary) == (
        "3 of 10 webhook deliveries in the last 60 min did not arrive (2 failed after every attempt, "
        "1 refused by the webhook policy); latest: job j9 failed: HTTP 503"
    )
    only_refused = {"delivered": 0, "failed": 0, "refused": 1, "windowS": 3600.0}
    assert trouble(only_refused) == (
        "1 of 1 webhook deliveries in the last 60 min did not arrive (1 refused by the webhook policy)"
    )


def test_stored_entries_restore_the_same_summary_and_bad_ones_are_skipped() -> None:
    first = WebhookOutcomes()
    stored: list[str] = []
    for at_s, outcome, job, reason in [
        (100.0, "delivered", "j0", ""),
        (101.0, "failed", "j1", "HTTP 503 after 3 attempts"),
        (102.0, "delivered", "j2", ""),
    ]:
        first.record("ep", outcome, at_s, job, reason)  # type: ignore[arg-type]
        stored.append(entry(outcome, at_s, job, reason))  # type: ignore[arg-type]
    again = WebhookOutcomes()
    again.restore("ep", [stored[0], "not json", '{"atS": 1}', '{"atS": 1, "outcome": "lost"}', *stored[1:]])
    assert again.summary("ep", 110.0) == first.summary("ep", 110.0)
    assert parse_entry(stored[1]) == (101.0, "failed", "j1", "HTTP 503 after 3 attempts")
    assert parse_entry("[]") is None and parse_entry('{"atS": "x", "outcome": "failed"}') is None


def test_a_late_read_back_counts_each_outcome_once_and_keeps_the_newer_ones() -> None:
    """The store's entries include outcomes this queue recorded before its read back came (the store was
    failing at its start); ones recorded after the newest stored entry stay."""
    out = WebhookOutcomes()
    out.record("ep", "delivered", 105.0, "j5")  # recorded here and stored
    out.record("ep", "failed", 107.0, "j7", "HTTP 500 after 1 attempt")  # recorded here after the read
    stored = [entry("failed", 101.0, "j1", "HTTP 503"), entry("delivered", 105.0, "j5")]
    out.restore("ep", stored)
    summary = out.summary("ep", 110.0)
    assert summary is not None and (summary["delivered"], summary["failed"]) == (1, 2), summary
    assert summary["lastProblem"]["jobId"] == "j7", "the newest problem"
    only = WebhookOutcomes()
    only.record("ep", "delivered", 100.0, "j0")
    only.restore("ep", [entry("failed", 102.0, "j2", "HTTP 503")])
    kept = only.summary("ep", 110.0)
    assert kept is not None and (kept["delivered"], kept["failed"]) == (0, 1), "older ones are the store's"
    assert kept["lastProblem"]["jobId"] == "j2"
