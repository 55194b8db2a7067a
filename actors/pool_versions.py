"""A pool's memory of its endpoint's versions: the spec of each version seen (what its replicas run), the
one serving (stable), the ones whose rollout halted, and the rollout in progress (its target, failed starts,
ready floor). The decisions are :mod:`orchestrator.core.rollout`'s; this keeps their state for one pool and
reports the outcomes to the queue (``report_version_state``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.core.models import EndpointSpec
from orchestrator.core.rollout import (
    FailedStart,
    RolloutMemory,
    RolloutPlan,
    RolloutStatus,
    RolloutTarget,
    choose_target,
    record_failure,
    remember_versions,
    settle,
)
from orchestrator.core.versions import active_version, apply_version, runtime_of

log = logging.getLogger("ripple.pool")


@dataclass
class PoolVersions:
    """See the module docstring. ``last``: the rollout plan of the last reconcile step."""

    endpoint: str
    specs: dict[int, EndpointSpec] = field(default_factory=dict)
    memory: RolloutMemory = field(default_factory=RolloutMemory)
    last: RolloutPlan | None = None
    loaded: bool = False

    def spec_of(self, version: int, default: EndpointSpec | None) -> EndpointSpec | None:
        """The spec replicas of ``version`` run (``default`` for a version not seen)."""
        return self.specs.get(version, default)

    @property
    def retiring(self) -> set[str]:
        """Replicas the last plan retires (an old one a new one already replaces)."""
        return set(self.last.retiring) if self.last else set()

    async def load(self, queue: Any, spec: EndpointSpec) -> None:
        """Once per pool: what the queue knows of this endpoint's versions (a restarted pool learns which
        one serves, and which failed), with each version's runtime fields."""
        self.loaded = True
        try:
            versions = await queue.endpoint_versions.remote(self.endpoint)
        except Exception:
            log.warning("pool %s: versions unavailable", self.endpoint, exc_info=True)
            return
        for v in versions:
            self.specs.setdefault(v.version, apply_version(spec, v))
        serving = active_version(versions)
        failed = [(v.version, v.error or "failed") for v in versions if v.state == "failed"]
        self.memory = remember_versions(self.memory, serving.version if serving else None, failed)

    def target(self, spec: EndpointSpec | None, ready: int) -> int:
        """The version to run: the spec's, or the stable one when the spec's failed (a halted rollout),
        given ``ready`` replicas serving. Records the spec of a version seen for the first time; a new
        target starts a rollout."""
        if spec is None:
            return self.memory.rolling_to or 0
        spec_version = self.spec_version(spec)
        self.specs.setdefault(spec_version, spec)
        before = self.memory.rolling_to
        version, self.memory = choose_target(self.memory, spec_version, ready)
        if version != before and version != self.memory.stable:
            log.info(
                "pool %s: rolling out v%d (serving v%s, %d ready)",
                self.endpoint,
                version,
                self.memory.stable,
                ready,
                extra={"endpoint": self.endpoint},
            )
        return version

    def spec_version(self, spec: EndpointSpec) -> int:
        """``spec.version``; a queue that does not number versions (0) gets them numbered here, one per
        change of the runtime fields (such versions are not reported)."""
        if spec.version > 0:
            return spec.version
        latest = max(self.specs, default=0)
        if latest and runtime_of(self.specs[latest]) == runtime_of(spec):
            return latest
        return latest + 1

    def rollout_target(
        self,
        spec: EndpointSpec | None,
        version: int,
        desired: int,
        gpus_free: Callable[[EndpointSpec | None], float],
    ) -> RolloutTarget:
        """What :func:`plan_rollout` plans for: ``desired`` replicas of ``version``; ``gpus_free(vspec)``:
        the GPUs a rollout may still take for replicas of that spec."""
        vspec = self.specs.get(version, spec)
        stable = self.memory.stable
        sspec = self.specs.get(stable) if stable is not None else None
        gpus = vspec.gpus if vspec is not None else 0.0
        return RolloutTarget(
            version=version,
            desired=desired,
            max_replicas=max(desired, spec.max_replicas if spec is not None else 0),
            gpus_free=gpus_free(vspec) if gpus > 0 else 0.0,
            gpus_per_replica=gpus,
            stable=stable,
            stable_gpus=sspec.gpus if sspec is not None else gpus,
            failures=self.memory.failures,
            ready_floor=self.memory.ready_floor,
        )

    def failed_start(self, failure: FailedStart) -> None:
        self.memory = record_failure(self.memory, failure)

    async def outcome(self, rp: RolloutPlan, queue: Any, spec: EndpointSpec | None) -> None:
        """Record ``rp`` as the last plan and report what it settled: the target active (the previous
        one is retired with it), or failed with the error (the stable version serving on). Versions the
        queue does not number (``spec.version`` 0) are not reported."""
        self.last = rp
        self.memory, reports = settle(self.memory, rp)
        if rp.status is RolloutStatus.HALTED:
            log.warning(
                "pool %s: rollout of v%d halted, v%s serves: %s",
                self.endpoint,
                rp.version,
                self.memory.stable,
                rp.error,
                extra={"endpoint": self.endpoint},
            )
        for report in reports:
            log.info("pool %s: v%d %s", self.endpoint, report.version, report.state)
            if spec is None or spec.version <= 0:
                continue  # numbered here, unknown to the queue
            try:
                await queue.report_version_state.remote(
                    self.endpoint, report.version, report.state, report.error
                )
            except Exception:
                log.warning("pool %s: reporting %s failed", self.endpoint, report, exc_info=True)

    def summary(self) -> dict[str, Any]:
        rp = self.last
        return {
            "version": self.memory.rolling_to,
            "stable": self.memory.stable,
            "status": rp.status.value if rp else None,
            "error": rp.error if rp else None,
            "failed": {str(v): e for v, e in self.memory.failed},
            "reasons": list(rp.reasons) if rp else [],
        }
