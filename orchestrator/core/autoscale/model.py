"""Value types of the autoscaling policy: what it reads, what it remembers, what it decides.

Everything here is a frozen value. The autoscaler actor builds a :class:`Snapshot` from the queue and the
worker pools, calls :func:`orchestrator.core.autoscale.policy.decide`, saves the returned
:class:`AutoscalerState` (``to_dict()`` is plain JSON) and only then applies the decisions. Times are
seconds on one clock chosen by the caller (``now_s``); the policy never reads a clock of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from orchestrator.core.autoscale.keepalive import GapHistogram, KeepAliveConfig

ReplicaState = Literal["starting", "idle", "busy", "draining", "unhealthy"]
KeepAliveMode = Literal["fixed", "learned"]
REPLICA_STATES: tuple[str, ...] = ("starting", "idle", "busy", "draining", "unhealthy")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def default_reclaim_after_s(step_s: float, boost_per_step: int, max_boost: int) -> float:
    """The default ``starvation_reclaim_after_s``: one starvation step after the boost has reached its
    maximum (so it follows a configured step: 1200 s with the default 300 s step, +10 per step, max 30)."""
    steps_to_max = -(-max_boost // boost_per_step) if boost_per_step > 0 else 0
    return step_s * (steps_to_max + 1)


@dataclass(frozen=True)
class AutoscaleConfig:
    """Cluster-wide policy knobs (defaults are the Waverless ones, with the bounds made explicit).

    ``starvation_reclaim_after_s``: once the oldest job of an endpoint that has no replica at all has waited
    this long, the endpoint may drain one replica (idle first, else busy: a draining replica finishes the
    job it holds before it stops) of an endpoint that holds more than ``max(min_replicas, 1)``. This is what
    bounds starvation when higher-priority load never lets a GPU go idle. ``None`` turns it off, and then
    only ``preempt_busy`` ever drains a busy replica. The default is one starvation step after the boost
    has reached its maximum (:func:`default_reclaim_after_s`).

    These defaults are the only ones: the ``RIPPLE_AUTOSCALER__*`` settings take theirs from here.
    """

    high_load_threshold: int = 10
    high_load_boost: int = 20
    starvation_step_s: float = 300.0
    starvation_boost_per_step: int = 10
    starvation_max_boost: int = 30
    preempt_busy: bool = False
    starvation_reclaim_after_s: float | None = default_reclaim_after_s(
        starvation_step_s, starvation_boost_per_step, starvation_max_boost
    )
    keep_alive: KeepAliveConfig = field(default_factory=KeepAliveConfig)

    def __post_init__(self) -> None:
        _require(
            self.high_load_threshold >= 1, f"high_load_threshold ({self.high_load_threshold}) must be >= 1"
        )
        _require(self.high_load_boost >= 0, f"high_load_boost ({self.high_load_boost}) must be >= 0")
        _require(self.starvation_step_s > 0, f"starvation_step_s ({self.starvation_step_s}) must be > 0")
        _require(
            0 <= self.starvation_boost_per_step <= self.starvation_max_boost
            or self.starvation_max_boost == 0,
            f"starvation_boost_per_step ({self.starvation_boost_per_step}) must be within "
            f"0..starvation_max_boost ({self.starvation_max_boost})",
        )
        _require(
            self.starvation_reclaim_after_s is None or self.starvation_reclaim_after_s >= 0,
            f"starvation_reclaim_after_s ({self.starvation_reclaim_after_s}) must be >= 0 or None",
        )


@dataclass(frozen=True)
class ReplicaView:
    """One replica as the pool sees it. ``idle_since_s`` is set while it is idle (time it became idle)."""

    id: str
    state: ReplicaState
    jobs_held: int = 0
    idle_since_s: float | None = None
    gpu_type: str | None = None  # the GPU type it holds or asked for; None: untyped or not known yet


@dataclass(frozen=True)
class Override:
    """An operator's override: ``disabled`` leaves the endpoint alone; ``desired_replicas`` pins its size."""

    desired_replicas: int | None = None
    disabled: bool = False


@dataclass(frozen=True)
class EndpointView:
    """One endpoint's settings and live counts. Defaults are the contract's endpoint defaults.

    ``queued``/``running`` count jobs; ``oldest_queued_age_s`` is the wait of the oldest queued job, read
    from the queue itself (so a restart loses nothing). ``last_arrival_s`` is the submission time of the
    newest job: the learned keep-alive measures idle gaps from it. ``cold_start_s`` is the expected time a
    new replica takes to become ready (the pool's measured median is best). ``gpu_types``: the GPU types
    its replicas may use, in order of preference (None: any).
    """

    name: str
    priority: int = 50
    min_replicas: int = 0
    max_replicas: int = 10
    scale_up_threshold: int = 1
    scale_down_idle_s: float = 300.0
    scale_up_cooldown_s: float = 30.0
    scale_down_cooldown_s: float = 60.0
    gpus_per_replica: float = 1.0
    cpus_per_replica: float = 1.0
    memory_mb_per_replica: float = 0.0
    concurrency: int = 1
    keep_alive: KeepAliveMode = "fixed"
    queued: int = 0
    running: int = 0
    oldest_queued_age_s: float | None = None
    replicas: tuple[ReplicaView, ...] = ()
    override: Override | None = None
    last_arrival_s: float | None = None
    cold_start_s: float = 30.0
    gpu_types: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _require(0 <= self.priority <= 100, f"{self.name}: priority ({self.priority}) must be within 0..100")
        _require(self.min_replicas >= 0, f"{self.name}: min_replicas ({self.min_replicas}) must be >= 0")
        _require(
            self.max_replicas >= self.min_replicas,
            f"{self.name}: max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})",
        )
        _require(self.concurrency >= 1, f"{self.name}: concurrency ({self.concurrency}) must be >= 1")
        _require(self.scale_up_threshold >= 1, f"{self.name}: scale_up_threshold must be >= 1")
        _require(self.gpus_per_replica >= 0, f"{self.name}: gpus_per_replica must be >= 0")
        _require(self.queued >= 0 and self.running >= 0, f"{self.name}: queued/running must be >= 0")
        _require(self.keep_alive in ("fixed", "learned"), f"{self.name}: keep_alive ({self.keep_alive!r})")
        _require(self.gpu_types is None or len(self.gpu_types) > 0, f"{self.name}: gpu_types is empty")

    def demand_replicas(self) -> int:
        """Replicas the work in hand needs: ``ceil((queued + running) / concurrency)``."""
        return math.ceil((self.queued + self.running) / self.concurrency)


@dataclass(frozen=True)
class Snapshot:
    """Everything :func:`decide` looks at, taken at ``now_s``.

    GPU accounting: ``gpus_total`` is the cluster's (logical) GPUs; ``gpus_used_elsewhere`` those held by
    anything that is not a replica listed here. Every listed replica, whatever its state (a starting one
    too, placed or not), is counted as holding ``gpus_per_replica``. Ripple's usable GPUs are
    ``min(gpus_total - gpus_used_elsewhere, max_gpus)``; ``cpus_total``/``memory_mb_total`` are optional
    caps on Ripple's replicas as a whole.

    GPU types: ``gpus_by_type`` are the typed GPUs of alive nodes (part of ``gpus_total``), and
    ``gpus_used_elsewhere_by_type`` those of each type held by anything that is not a listed replica. A
    replica counts against its ``gpu_type``. ``gpus_growth`` (part of ``gpus_total``) are GPUs the cluster
    may still add (``max_gpus`` above today's GPUs), of a type not known in advance: a replica of any type
    may count on them (it waits for the node). An endpoint with ``gpu_types`` gets only GPUs of those types
    (or growth); one without gets any.
    """

    now_s: float
    endpoints: tuple[EndpointView, ...]
    gpus_total: float
    gpus_used_elsewhere: float = 0.0
    max_gpus: float | None = None
    cpus_total: float | None = None
    memory_mb_total: float | None = None
    enabled: bool = True
    config: AutoscaleConfig = field(default_factory=AutoscaleConfig)
    gpus_by_type: Mapping[str, float] = field(default_factory=dict)
    gpus_used_elsewhere_by_type: Mapping[str, float] = field(default_factory=dict)
    gpus_growth: float = 0.0


# ---------------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True)
class ScaleUp:
    """Start ``count`` new replicas of ``endpoint``."""

    endpoint: str
    count: int
    reason: str
    kind: ClassVar[str] = "scale_up"


@dataclass(frozen=True)
class Prewarm:
    """Start ``count`` replicas ahead of a predicted arrival (learned keep-alive). Applied like ScaleUp."""

    endpoint: str
    count: int
    reason: str
    kind: ClassVar[str] = "prewarm"


@dataclass(frozen=True)
class Drain:
    """Drain these replicas: they take no new job, finish what they hold, then stop.

    ``preempted_by`` names the endpoint the GPUs are freed for, when this is a preemption.
    """

    endpoint: str
    replica_ids: tuple[str, ...]
    reason: str
    preempted_by: str | None = None
    kind: ClassVar[str] = "drain"


@dataclass(frozen=True)
class Blocked:
    """``endpoint`` wanted ``wanted`` more replicas than it was given, for ``reason``. Nothing to apply."""

    endpoint: str
    wanted: int
    reason: str
    kind: ClassVar[str] = "blocked"


Decision = ScaleUp | Prewarm | Drain | Blocked


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    """A JSON-ready dict of one decision (for the history), with its ``kind``."""
    out: dict[str, Any] = {"kind": decision.kind}
    for name, value in vars(decision).items():
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


# ------------------------------------------------------------------------------------------------- state


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class EndpointMemory:
    """What the policy remembers about one endpoint between calls (all times on the snapshot clock).

    ``waiting_since_s``: first call that saw queued work in the current waiting spell (the starvation clock
    when the queue gives no oldest age). ``quiet_since_s``: when the endpoint last ran out of work (nothing
    queued or running). ``busy_peak_replicas``: demand peak of the current busy spell; ``recent_peaks``:
    those of the last few spells (a pre-warm starts their maximum). ``released_for_s``/``prewarmed_for_s``:
    the quiet spell (its ``quiet_since_s``) in which replicas were released early / pre-warmed.
    ``expected_capacity``/``expected_at_s``: replicas the last ScaleUp/Prewarm should have brought the
    endpoint to, and when it was decided (an expectation, as KubeRay keeps them).
    ``leaving``/``leaving_at_s``: replicas the last calls drained (each with the endpoint it was preempted
    for, or ``""``), and when: until a snapshot lists them as draining (or ``EXPECTATION_TTL_S`` passes)
    they count as leaving, not as idle capacity, and a preempted one's GPUs stay claimed by its preemptor.
    """

    last_scale_up_s: float | None = None
    last_scale_down_s: float | None = None
    last_arrival_s: float | None = None
    quiet_since_s: float | None = None
    waiting_since_s: float | None = None
    blocked_since_s: float | None = None
    busy_peak_replicas: int = 0
    recent_peaks: tuple[int, ...] = ()
    released_for_s: float | None = None
    prewarmed_for_s: float | None = None
    expected_capacity: int = 0
    expected_at_s: float | None = None
    leaving: tuple[tuple[str, str], ...] = ()
    leaving_at_s: float | None = None
    gaps: GapHistogram = field(default_factory=GapHistogram)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: v for k, v in vars(self).items() if k != "gaps"}
        out["recent_peaks"] = list(self.recent_peaks)
        out["leaving"] = [list(x) for x in self.leaving]
        out["gaps"] = self.gaps.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EndpointMemory:
        floats = (
            "last_scale_up_s",
            "last_scale_down_s",
            "last_arrival_s",
            "quiet_since_s",
            "waiting_since_s",
            "blocked_since_s",
            "prewarmed_for_s",
            "released_for_s",
            "expected_at_s",
            "leaving_at_s",
        )
        kwargs: dict[str, Any] = {k: _opt_float(data.get(k)) for k in floats}
        return cls(
            **kwargs,
            busy_peak_replicas=int(data.get("busy_peak_replicas", 0)),
            recent_peaks=tuple(int(x) for x in data.get("recent_peaks", ())),
            expected_capacity=int(data.get("expected_capacity", 0)),
            leaving=tuple((str(i), str(by)) for i, by in data.get("leaving", ())),
            gaps=GapHistogram.from_dict(data.get("gaps", {})),
        )


EMPTY_MEMORY = EndpointMemory()


@dataclass(frozen=True)
class AutoscalerState:
    """The policy's memory: one :class:`EndpointMemory` per endpoint name. Treat as immutable."""

    endpoints: Mapping[str, EndpointMemory] = field(default_factory=dict)
    version: ClassVar[int] = 1

    def memory(self, name: str) -> EndpointMemory:
        return self.endpoints.get(name, EMPTY_MEMORY)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (str keys, numbers, lists, None)."""
        return {"version": self.version, "endpoints": {k: m.to_dict() for k, m in self.endpoints.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AutoscalerState:
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` on an unknown version."""
        version = int(data.get("version", cls.version))
        if version != cls.version:
            raise ValueError(f"autoscaler state version {version} is not {cls.version}")
        raw = data.get("endpoints", {})
        return cls(endpoints={str(k): EndpointMemory.from_dict(v) for k, v in raw.items()})
