"""Deliveries: a job delivered to a replica twice (the store's record read after its take failed) runs
there once, whether it still runs, ended a moment ago, or comes again in the same delivery; a job leased to
it again with a new attempt runs again."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.core.deliveries import Deliveries

pytestmark = pytest.mark.timeout(10)


def job(job_id: str, attempt: int = 1) -> dict[str, Any]:
    return {"id": job_id, "input": {"k": job_id}, "attempt": attempt}


def test_a_job_received_once_is_left_out_after_while_held_and_after_it_ended() -> None:
    d = Deliveries()
    assert d.fresh([job("a"), job("b")]) == [job("a"), job("b")]
    assert d.fresh([job("a"), job("c")]) == [job("c")], "a still runs here"
    d.ended("a")
    assert d.fresh([job("a")]) == [], "its result may still be on its way"
    assert d.fresh([job("d"), job("d")]) == [job("d")], "twice in one delivery: once"


def test_a_new_attempt_is_a_new_delivery() -> None:
    d = Deliveries()
    d.fresh([job("a")])
    d.ended("a")
    assert d.fresh([job("a", attempt=2)]) == [job("a", attempt=2)]
    assert d.fresh([job("a", attempt=2)]) == []


def test_ended_jobs_are_remembered_up_to_the_bound_held_ones_always() -> None:
    d = Deliveries(remembered=2)
    d.fresh([job("long"), job("a"), job("b"), job("c")])
    for j in ("a", "b", "c"):
        d.ended(j)
    assert d.fresh([job("a")]) == [job("a")], "the oldest ended job is forgotten"
    assert d.fresh([job("b"), job("c"), job("long")]) == [], "the latest two, and the one still held"
    d.ended("unknown")  # never received: nothing to do


def test_the_bound_is_checked() -> None:
    with pytest.raises(ValueError, match="remembered"):
        Deliveries(remembered=0)
