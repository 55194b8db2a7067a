"""The dispatcher's endpoint versions and pool problems (see :mod:`orchestrator.core.versions`).

:class:`VersionDispatch` keeps every endpoint's versions (in the store under ``versions:{ep}``, cached
here), creates a version when an endpoint is created or a runtime field changes, applies the pools'
reports (:meth:`report_version_state`, :meth:`report_pool_problem`), rolls back, and derives an
endpoint's ``problem`` (:mod:`orchestrator.core.endpoint_problem`). Pure, like the rest of the dispatcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from orchestrator.core.dispatch_workers import WorkerDispatch
from orchestrator.core.endpoint_problem import endpoint_problem
from orchestrator.core.errors import Conflict, InvalidInput
from orchestrator.core.models import EndpointSpec
from orchestrator.core.versions import (
    VERSION_STATES,
    EndpointVersion,
    VersionState,
    add_version,
    apply_version,
    next_version,
    rollback_target,
    set_state,
)

log = logging.getLogger("ripple.queue")
MAX_POOL_ERROR_CHARS = 2000


class VersionDispatch(WorkerDispatch):
    """Versions and pool problems on top of the shared dispatch state. Single event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._versions_cache: dict[str, list[EndpointVersion]] = {}
        self._pool_errors: dict[str, tuple[str, float]] = {}  # endpoint -> (message, wall clock s)

    def _vcache(self) -> dict[str, list[EndpointVersion]]:
        return self._versions_cache

    async def _versions(self, name: str) -> list[EndpointVersion]:
        """The versions of endpoint ``name`` (which exists), oldest first. An endpoint stored before
        versions existed gets version 1 from its spec, ``active`` (its replicas already run it)."""
        cache = self._vcache()
        if name in cache:
            return cache[name]
        raw = await self.store.load_versions(name)
        versions = sorted((EndpointVersion.model_validate_json(v) for v in raw.values()), key=_number)
        if not versions:
            spec = self.endpoints[name]
            first = next_version(None, spec, [], self.now_ms())
            assert first is not None
            first = first.model_copy(update={"state": "active", "activated_ms": self.now_ms()})
            versions = [first]
            await self.store.put_versions(name, {1: first.model_dump_json()})
            updated = spec.model_copy(update={"version": 1})
            await self.store.put_endpoint(name, updated.model_dump_json())
            self.endpoints[name] = updated
        cache[name] = versions
        return versions

    async def _save_versions(
        self, name: str, before: Sequence[EndpointVersion], after: list[EndpointVersion]
    ) -> None:
        """Persist the versions of ``after`` that differ from ``before``, then cache ``after``."""
        old = {v.version: v for v in before}
        records = {v.version: v.model_dump_json() for v in after if old.get(v.version) != v}
        await self.store.put_versions(name, records)
        self._vcache()[name] = after

    async def _versioned(self, before: EndpointSpec | None, after: EndpointSpec) -> EndpointSpec:
        """Record the version a change from ``before`` to ``after`` creates (none for a scaling change)
        and return ``after`` carrying the latest version number. The version is stored before the spec
        that names it. An endpoint without a handler (outside workers only) has nothing to roll out: its
        new version is active at once."""
        versions = [] if before is None else await self._versions(after.name)
        now_ms = self.now_ms()
        new = next_version(before, after, versions, now_ms)
        if new is None:
            return after.model_copy(update={"version": before.version if before else 0})
        updated = add_version(versions, new)
        if after.handler is None:
            updated = set_state(updated, new.version, "active", None, now_ms)
        await self._save_versions(after.name, versions, updated)
        self._pool_errors.pop(after.name, None)  # a new version: the old error no longer says anything
        log.info("endpoint %s: version %d (changed: %s)", after.name, new.version, ", ".join(new.changed))
        return after.model_copy(update={"version": new.version})

    def _forget_versions(self, name: str) -> None:
        self._vcache().pop(name, None)
        self._pool_errors.pop(name, None)

    # Public ---------------------------------------------------------------------------------------

    async def list_versions(self, name: str) -> dict[str, Any]:
        """``{"versions": [...]}``, newest first, in wire form. Raises NotFound."""
        await self._endpoint(name)
        return {"versions": [v.wire() for v in reversed(await self._versions(name))]}

    async def endpoint_versions(self, name: str) -> list[EndpointVersion]:
        """The versions of an endpoint, oldest first (for its pool, inside the cluster). Raises NotFound."""
        await self._endpoint(name)
        return list(await self._versions(name))

    async def report_version_state(
        self, endpoint: str, version: int, state: str, error: str | None = None
    ) -> dict[str, Any]:
        """A pool's report on a rollout: version ``version`` is now ``state`` (``active`` once its
        replicas serve, retiring the previously active one; ``failed`` with ``error`` when they could not
        start or load). A repeated report is a no-op. Returns the version's wire form. Raises NotFound
        (endpoint or version), InvalidInput for an unknown state, Conflict for a move the lifecycle does
        not allow (see :func:`orchestrator.core.versions.set_state`)."""
        await self._endpoint(endpoint)
        if state not in VERSION_STATES:
            raise InvalidInput(
                f"unknown version state {state!r}",
                [{"loc": ["state"], "msg": f"must be one of {', '.join(VERSION_STATES)}", "type": "enum"}],
            )
        st: VersionState = state
        versions = await self._versions(endpoint)
        updated = set_state(versions, version, st, error, self.now_ms())
        if updated != versions:
            await self._save_versions(endpoint, versions, updated)
            log.info(
                "endpoint %s: version %d is %s%s", endpoint, version, state, f": {error}" if error else ""
            )
        return next(v for v in updated if v.version == version).wire()

    async def report_pool_problem(self, endpoint: str, message: str | None) -> None:
        """The pool's reconcile step failed with ``message`` (None: it works again). Shown as the
        endpoint's ``problem`` for a while (``endpoint_problem.POOL_ERROR_TTL_S``)."""
        await self._endpoint(endpoint)
        if message:
            self._pool_errors[endpoint] = (message[:MAX_POOL_ERROR_CHARS], self.clock.now_s())
        else:
            self._pool_errors.pop(endpoint, None)

    async def problem(self, name: str) -> dict[str, Any] | None:
        """Why endpoint ``name`` cannot serve (see :func:`endpoint_problem`), or None."""
        versions = await self._versions(name)
        return endpoint_problem(
            self.registry.views(name), versions, self._pool_errors.get(name), self.clock.now_s()
        )

    async def rollback_spec(self, name: str, to: int | None) -> tuple[EndpointSpec, EndpointVersion]:
        """The spec a rollback of ``name`` to version ``to`` (default: the previous good one, see
        :func:`rollback_target`) makes, and that target. Raises NotFound, Conflict when there is no
        earlier version or the endpoint already runs the target's fields."""
        spec = await self._endpoint(name)
        versions = await self._versions(name)
        target = rollback_target(versions, to)
        after = apply_version(spec, target)
        if next_version(spec, after, versions, 0) is None:
            raise Conflict(
                f"endpoint {name!r} already runs version {target.version}'s code and settings",
                {"version": target.version, "current": spec.version},
            )
        return after, target


def _number(v: EndpointVersion) -> int:
    return v.version
