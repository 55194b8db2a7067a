"""Jobs written to the store by callers other than the queue actor: the HTTP replica's ``runsync`` and the
in-cluster client (issue 12: the queue actor off the per-job path).

Such a caller builds each job from its endpoint's spec (:func:`orchestrator.core.dispatch.new_job`). The spec
is read from the store once and kept (:class:`SpecCache`) with the SHA-1 of its stored JSON, which the SUBMIT
step compares with the stored spec in the same atomic step that writes the jobs: a job is never written from
a spec that changed since, or for an endpoint deleted since (``SpecChanged``: nothing written; the caller
reads the spec again and builds the job again). So a submission costs one round trip to the store.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from orchestrator.core.errors import Conflict, NotFound
from orchestrator.core.models import STORED, EndpointSpec

FIRST_WAIT_S = 0.05
"""How long a caller that waits for the job it submits (HTTP ``runsync``) waits in the submit's own round
trip, before it tells the queue of the job (which wakes the autoscaler when no replica is free): most short
jobs end within it, and a job that waits for a replica to start loses no more than this."""

SPEC_READS = 3
"""Reads of an endpoint's spec one submission may make before giving up (it changed under each of them)."""


@dataclass(frozen=True)
class KnownSpec:
    """An endpoint's spec as stored, and the SHA-1 (hex) of the stored JSON it was parsed from."""

    spec: EndpointSpec
    sha1: str


@functools.lru_cache(maxsize=64)
def known_spec(raw: str) -> KnownSpec:
    """The spec of the stored JSON ``raw``, parsed once per distinct JSON (never mutate it)."""
    spec = EndpointSpec.model_validate_json(raw, context={STORED: True})
    return KnownSpec(spec, hashlib.sha1(raw.encode()).hexdigest())


class SpecCache:
    """The specs of the endpoints one caller submitted to, as last read from the store."""

    def __init__(self) -> None:
        self._known: dict[str, KnownSpec] = {}

    def get(self, endpoint: str) -> KnownSpec | None:
        return self._known.get(endpoint)

    def learn(self, endpoint: str, raw: str | None) -> KnownSpec:
        """The spec just read from the store (``raw``), kept. Raises NotFound when there is none."""
        if raw is None:
            self._known.pop(endpoint, None)
            raise NotFound(f"endpoint {endpoint!r} not found", {"endpoint": endpoint})
        known = self._known[endpoint] = known_spec(raw)
        return known

    def forget(self, endpoint: str) -> None:
        """The store refused a job built from the kept spec (it changed, or the endpoint is gone)."""
        self._known.pop(endpoint, None)


def spec_kept_changing(endpoint: str) -> Conflict:
    """The error when every one of :data:`SPEC_READS` submissions met a spec changed since it was read."""
    return Conflict(
        f"the spec of endpoint {endpoint!r} changed while the job was submitted; submit it again",
        {"endpoint": endpoint},
    )
