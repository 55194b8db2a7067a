"""Which jobs a replica has received, so that a job delivered to it twice runs there once.

A replica that takes from the store itself can lose a step's reply (a network partition between it and
Redis, a step cut off at its time limit) while the store has leased the jobs to it. The queue then delivers
every running job leased to the replica again (``WorkerDispatch.redeliver``), among them jobs the replica
already runs, or has finished without its result being final in the store yet. :class:`Deliveries` knows
them: the jobs it holds until they end, and the latest ``remembered`` jobs after that. A job is known by its
id and attempt: one handed back to the queue and leased to the same replica again is a new delivery.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

REMEMBERED = 4096
"""How many ended jobs a replica remembers: far more than can end between a job's end and its result
being final in the store."""

J = TypeVar("J", bound=Mapping[str, Any])


class Deliveries:
    """The jobs one replica received (see the module docstring). Not thread-safe: one event loop."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        if remembered < 1:
            raise ValueError(f"remembered must be at least 1, got {remembered}")
        self.remembered = remembered
        self._held: dict[str, int] = {}  # job id -> attempt, until the job ends
        self._ended: OrderedDict[tuple[str, int], None] = OrderedDict()  # the latest, oldest first

    def fresh(self, jobs: Iterable[J]) -> list[J]:
        """``jobs`` (wire dicts: ``id``, ``attempt``) this replica never received, in order, now held; a
        job received before, or twice in ``jobs``, is left out."""
        out = []
        for job in jobs:
            job_id, attempt = str(job["id"]), int(job["attempt"])
            if self._held.get(job_id) == attempt or (job_id, attempt) in self._ended:
                continue
            self._held[job_id] = attempt
            out.append(job)
        return out

    def ended(self, job_id: str) -> None:
        """The job stopped running here (its result may still be on its way to the store)."""
        attempt = self._held.pop(job_id, None)
        if attempt is None:
            return
        self._ended[(job_id, attempt)] = None
        while len(self._ended) > self.remembered:
            self._ended.popitem(last=False)
