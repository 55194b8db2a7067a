"""The dispatcher's endpoint versions, their code packages and pool problems (see
:mod:`orchestrator.core.versions`, :mod:`orchestrator.core.package_retention`).

:class:`VersionDispatch` keeps every endpoint's versions (in the store under ``versions:{ep}``, cached
here), creates a version when an endpoint is created or a runtime field changes, applies the pools'
reports (:meth:`report_version_state`, :meth:`report_pool_problem`), rolls back, derives an endpoint's
``problem`` (:mod:`orchestrator.core.endpoint_problem`), and deletes the code packages no kept version
names (:meth:`prune_packages`, through the :class:`PackageShelf` it is given). Pure, like the rest of the
dispatcher.

Version changes (new versions, rollbacks, the pools' reports), endpoint deletions, package arrivals and
pruning hold one lock (:attr:`code_lock`): a package is never deleted between a version's creation and
its store write, nor between an upload's record and the upload (:meth:`package_arriving`), and a prune
never writes over a version's state changed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from orchestrator.core.dispatch_ports import PackageShelf
from orchestrator.core.dispatch_workers import WorkerDispatch
from orchestrator.core.endpoint_problem import endpoint_problem
from orchestrator.core.errors import Conflict, InvalidInput
from orchestrator.core.models import EndpointSpec
from orchestrator.core.package_retention import kept_versions, naming, to_delete
from orchestrator.core.versions import (
    VERSION_RECORDS_KEPT,
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
PRUNE_EVERY_S = 300.0  # besides after every version change: a package past its grace goes within this


class VersionDispatch(WorkerDispatch):
    """Versions and pool problems on top of the shared dispatch state. Single event loop."""

    def __init__(self, *args: Any, packages: PackageShelf | None = None, **kwargs: Any) -> None:
        """``packages``: where code packages are deleted from (None: nothing is pruned)."""
        super().__init__(*args, **kwargs)
        self._versions_cache: dict[str, list[EndpointVersion]] = {}
        self._pool_errors: dict[str, tuple[str, float]] = {}  # endpoint -> (message, wall clock s)
        self.packages = packages
        self.code_lock = asyncio.Lock()
        self._pruned_s = 0.0  # monotonic time of the last periodic prune

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
        """Persist the versions of ``after`` that differ from ``before`` and delete those of ``before`` that
        ``after`` no longer has, then cache ``after``."""
        old = {v.version: v for v in before}
        records = {v.version: v.model_dump_json() for v in after if old.get(v.version) != v}
        numbers = {v.version for v in after}
        await self.store.put_versions(name, records, sorted(old.keys() - numbers))
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
        updated = kept_versions(updated, VERSION_RECORDS_KEPT)  # the oldest record goes
        await self._save_versions(after.name, versions, updated)
        self._pool_errors.pop(after.name, None)  # a new version: the old error no longer says anything
        log.info("endpoint %s: version %d (changed: %s)", after.name, new.version, ", ".join(new.changed))
        return after.model_copy(update={"version": new.version})

    def _forget_versions(self, name: str) -> None:
        self._vcache().pop(name, None)
        self._pool_errors.pop(name, None)

    # Code packages --------------------------------------------------------------------------------

    async def package_arriving(self, uri: str) -> None:
        """Record that package ``uri`` is being uploaded now (the caller awaits this, then uploads): it is
        kept at least ``package_grace_s`` from now, and a prune that was deleting it has finished, so
        the upload finds it missing and puts it back."""
        async with self.code_lock:
            await self.store.record_packages({uri: self.now_ms()})

    async def prune_packages(self) -> list[str]:
        """Delete the recorded code packages that no kept version of any endpoint names (see
        :func:`orchestrator.core.package_retention.to_delete`); the versions naming one then carry
        ``codeDeletedAt``. Returns the URIs deleted. Call it holding :attr:`code_lock`. A package the
        shelf fails to delete stays recorded (tried again at the next prune)."""
        if self.packages is None:
            return []
        arrived = await self.store.load_packages()
        if not arrived:
            return []
        await self.recover()
        by_endpoint = {name: await self._versions(name) for name in list(self.endpoints)}
        now_ms = self.now_ms()
        doomed = to_delete(arrived, by_endpoint, self.cfg.keep_versions, now_ms, self.cfg.package_grace_s)
        deleted = [uri for uri in doomed if self.packages.delete(uri)]
        if not deleted:
            return []
        gone = set(deleted)
        for name, versions in by_endpoint.items():
            marked = {v.version for v in naming(versions, gone)}
            if marked:
                update = {"code_deleted_ms": now_ms}
                after = [v.model_copy(update=update) if v.version in marked else v for v in versions]
                await self._save_versions(name, versions, after)
        await self.store.forget_packages(deleted)
        log.info("deleted %d code package(s) no kept version runs: %s", len(deleted), ", ".join(deleted))
        return deleted

    async def _prune_after_change(self) -> None:
        """:meth:`prune_packages` after a change that succeeded: a failure (the store unreachable) is
        logged, not raised into the change's reply; the periodic prune tries again."""
        try:
            await self.prune_packages()
        except Exception:
            log.warning("pruning code packages failed (tried again later)", exc_info=True)

    async def sweep_once(self) -> None:
        """The dispatcher's sweep, and every ``PRUNE_EVERY_S`` a prune of code packages (one past its
        grace, or left by a deleted endpoint, goes then)."""
        await super().sweep_once()
        now_s = self.clock.monotonic_s()
        if self.packages is not None and now_s - self._pruned_s >= PRUNE_EVERY_S:
            self._pruned_s = now_s
            async with self.code_lock:
                await self.prune_packages()

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
        async with self.code_lock:
            versions = await self._versions(endpoint)
            updated = set_state(versions, version, st, error, self.now_ms())
            if updated != versions:
                await self._save_versions(endpoint, versions, updated)
                log.info(
                    "endpoint %s: version %d is %s%s", endpoint, version, state, f": {error}" if error else ""
                )
                if st == "active":  # the version it replaces may no longer be kept
                    await self._prune_after_change()
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
