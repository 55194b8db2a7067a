"""Batched one-way notices (``orchestrator.notices``): the notices of a moment go together, one call per key;
``flush`` sends at once; a failing send is logged, never raised into the caller."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from orchestrator.notices import LoopNotices, ThreadNotices
from tests.log_lines import log_lines

pytestmark = pytest.mark.timeout(10)


async def test_the_notices_of_a_moment_go_together_per_key() -> None:
    sent: list[tuple[str, list[int]]] = []
    notices: LoopNotices[str, int] = LoopNotices(lambda k, items: sent.append((k, items)), delay_s=0.05)
    notices.add("a", [1])
    notices.add("b", [2])
    notices.add("a", [3, 4])
    assert sent == [], "not sent while the batch gathers"
    await asyncio.sleep(0.1)
    assert sorted(sent) == [("a", [1, 3, 4]), ("b", [2])]
    notices.add("a", [5])
    notices.flush()
    assert sent[-1] == ("a", [5]), "flush sends at once"
    await asyncio.sleep(0.1)
    assert len(sent) == 3, "nothing is sent twice"


async def test_a_failing_send_is_logged_not_raised() -> None:
    sent: list[str] = []

    def send(key: str, items: list[int]) -> None:
        if key == "bad":
            raise RuntimeError("actor gone")
        sent.append(key)

    notices: LoopNotices[str, int] = LoopNotices(send, delay_s=0.01)
    with log_lines("ripple.notices", logging.WARNING) as lines:
        notices.add("bad", [1])
        notices.add("good", [2])
        await asyncio.sleep(0.05)
    assert sent == ["good"], "one key's failure does not stop the others"
    assert "could not send 1 notices (bad)" in lines


def test_thread_notices_batch_what_arrives_meanwhile() -> None:
    sent: list[tuple[str, list[int]]] = []
    done = threading.Event()

    def send(key: str, items: list[int]) -> None:
        sent.append((key, items))
        if sum(len(i) for _, i in sent) == 5:
            done.set()

    notices: ThreadNotices[str, int] = ThreadNotices(send, delay_s=0.05)
    start_s = time.monotonic()
    for k in range(4):
        notices.add("a", k)
    notices.add("b", 9)
    assert time.monotonic() - start_s < 0.05, "adding never waits for the send"
    assert done.wait(5)
    assert sorted(sent) == [("a", [0, 1, 2, 3]), ("b", [9])]


async def test_a_batch_goes_when_its_most_urgent_notice_is_due() -> None:
    sent: list[tuple[str, list[int]]] = []
    notices: LoopNotices[str, int] = LoopNotices(lambda k, items: sent.append((k, items)), delay_s=0.05)
    notices.add("a", [1], within_s=5.0)
    await asyncio.sleep(0.1)
    assert sent == [], "bookkeeping waits its own time"
    notices.add("b", [2])
    await asyncio.sleep(0.1)
    assert sorted(sent) == [("a", [1]), ("b", [2])], "sent with the notice due first"
    notices.add("a", [3])
    notices.add("a", [4], within_s=5.0)
    await asyncio.sleep(0.1)
    assert sent[-1] == ("a", [3, 4]), "a later deadline does not hold back an earlier one"


def test_thread_notices_go_when_the_most_urgent_is_due() -> None:
    sent: list[tuple[str, list[int]]] = []
    done = threading.Event()

    def send(key: str, items: list[int]) -> None:
        sent.append((key, items))
        done.set()

    notices: ThreadNotices[str, int] = ThreadNotices(send, delay_s=0.05)
    notices.add("a", 1, within_s=5.0)
    assert not done.wait(0.2), "bookkeeping waits its own time"
    notices.add("a", 2)
    assert done.wait(4), "an urgent notice brings the batch forward"
    assert sent == [("a", [1, 2])]


def test_in_cluster_arrivals_after_ray_was_shut_down_are_dropped_not_sent() -> None:
    import ray

    from orchestrator.client import InClusterClient

    sent: list[tuple[str, list[str]]] = []

    class Submitted:
        def remote(self, endpoint: str, job_ids: list[str]) -> None:
            sent.append((endpoint, job_ids))

    class Queue:
        submitted = Submitted()

    assert not ray.is_initialized()
    client = object.__new__(InClusterClient)  # its queue handle, no cluster to look it up in
    client._queue = Queue()
    with log_lines("ripple.client") as lines:
        # The notice of a submit, sent after the caller left its Ray (what its notices thread calls).
        client._queue_submitted("ep", ["job-1"])
    assert lines == ["Ray was shut down: 1 arrivals not told to the queue"]
    assert sent == [], "an actor call with no Ray would start a local Ray in the caller's process"
    assert not ray.is_initialized()
