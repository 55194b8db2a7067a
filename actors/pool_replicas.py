"""A pool's replicas as it tracks them, and the detached replica actors found again by name.

Replicas are *detached* actors named ``worker:<endpoint>:<suffix>`` in Ripple's namespace: the GCS owns them,
not the pool that created them, so a pool's death (its process killed, the head node lost) does not take
them along. A pool that (re)starts adopts the running replicas of its endpoint (:func:`adopt`); what no
pool adopts or drains is killed explicitly (:func:`kill_replicas`, :func:`kill_orphan_replicas`), as
detached actors otherwise live as long as the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from actors import ray_cluster
from orchestrator.core.error_text import error_line
from orchestrator.core.gpu_types import TypeCapacity
from orchestrator.core.pool_plan import ReplicaInfo
from orchestrator.core.replica_start import NO_SETUP, Start, start_stage
from orchestrator.core.rollout import VersionedReplica
from orchestrator.core.workers import (
    WorkerRecord,
    WorkerState,
    absorb_report,
    is_active,
    is_live,
    new_worker,
    parse_state,
    record_jobs,
    stopped_at_s,
    transition,
)

log = logging.getLogger("ripple.pool")
REPLICA_PREFIX = "worker:"
ADOPT_STATUS_TIMEOUT_S = 5.0  # a replica found by name that does not answer ``status`` within this is killed
PENDING_STATES = ("DEPENDENCIES_UNREADY", "PENDING_CREATION")  # created, constructor not finished


def replica_actor_name(endpoint: str, worker_id: str) -> str:
    """The actor name of replica ``worker_id`` (``<endpoint>-<suffix>``): ``worker:<endpoint>:<suffix>``."""
    return f"{REPLICA_PREFIX}{endpoint}:{worker_id.rsplit('-', 1)[1]}"


def _worker_id(name: str) -> tuple[str, str] | None:
    """(endpoint, worker id) of a replica actor name, None for another name."""
    if not name.startswith(REPLICA_PREFIX) or name.count(":") < 2:
        return None
    endpoint, suffix = name[len(REPLICA_PREFIX) :].rsplit(":", 1)
    return endpoint, f"{endpoint}-{suffix}"


def named_replicas(namespace: str) -> list[tuple[str, str, str]]:
    """(actor name, endpoint, worker id) of every live replica actor of the namespace, by name."""
    from ray.util import list_named_actors

    out = []
    for entry in list_named_actors(all_namespaces=True):
        name = str(entry.get("name", ""))
        parsed = _worker_id(name)
        if entry.get("namespace") == namespace and parsed is not None:
            out.append((name, *parsed))
    return out


def _kill_named(name: str, namespace: str) -> bool:
    try:
        ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
    except ValueError:  # gone meanwhile
        return False
    return True


def kill_replicas(namespace: str, endpoints: Collection[str] | None = None) -> list[str]:
    """Kill the replica actors of ``endpoints`` (every endpoint: None) found by name; returns their names."""
    return [
        name
        for name, endpoint, _ in named_replicas(namespace)
        if (endpoints is None or endpoint in endpoints) and _kill_named(name, namespace)
    ]


def kill_orphan_replicas(namespace: str, endpoints: Collection[str]) -> list[str]:
    """Kill the replica actors whose endpoint is not in ``endpoints`` (deleted while its pool was down, or
    left by a pool that failed to close); returns their names."""
    return [
        name
        for name, endpoint, _ in named_replicas(namespace)
        if endpoint not in endpoints and _kill_named(name, namespace)
    ]


@dataclass
class TrackedReplica:
    """One replica as its pool sees it. Its lifecycle is ``record`` (a ``workers.WorkerRecord``), moved
    only through ``workers.transition``: STARTING at creation, IDLE once its handler loaded, IDLE <-> BUSY
    with the jobs it reports, DRAINING when the pool drains it or it reports draining, STOPPED when it
    stopped or was lost (still listed until Ray has released its actor, see ``WorkerPool._reap``)."""

    record: WorkerRecord
    handle: Any
    ready_ref: Any
    ready: bool = False  # its handler loaded and ``run`` was started (a drained STARTING one never is)
    run_ref: Any = None  # its ``run`` (or, adopted, its ``wait_stopped``): resolves when it stops
    info: dict[str, Any] = field(default_factory=dict)  # its last ``status``
    pending_placement: bool = False  # no node has granted its resources yet (``Start.WAITING``)
    setting_up: bool = False  # a node granted them and prepares its process (``Start.SETTING_UP``)
    asked: frozenset[str] | None = None  # the Ray resources it asks for (None: unknown, adopted)
    setup: str = NO_SETUP  # what its node does before its process runs (``setup_activity``)
    error: str | None = None
    gpu_type: str | None = None  # the GPU type it asked for (None: any)
    version: int = 0  # the endpoint version it runs
    gpus: float = 0.0  # the GPUs it holds or asks for (its version's)
    loading_since_s: float | None = None  # placed and loading its handler since (None: not seen placed)
    adopted: bool = False  # found by name (created by an earlier pool), not started by this one
    answered_s: float = field(default_factory=time.time)  # its last ``status`` answer (or ready, adopted)

    @property
    def worker_id(self) -> str:
        return self.record.worker_id

    @property
    def actor_id(self) -> str:
        return str(self.handle._actor_id.hex())

    @property
    def draining(self) -> bool:
        """Leaving: drained or stopped (``not is_active``)."""
        return not is_active(self.record.state)

    @property
    def gone_s(self) -> float | None:
        """When it stopped or was lost (None while live)."""
        return stopped_at_s(self.record)

    def follow(self, info: dict[str, Any], now_s: float) -> None:
        """Takes in its ``status``: health, node and jobs (IDLE <-> BUSY), DRAINING when it says so."""
        self.info = info
        rec = absorb_report(self.record, info)
        if not is_live(rec.state):
            self.record = rec
            return
        rec = record_jobs(rec, (str(j) for j in info.get("jobs") or ()), now_s)
        if parse_state(info.get("state")) is WorkerState.DRAINING and is_active(rec.state):
            rec = transition(rec, WorkerState.DRAINING, now_s, str(info.get("reason") or "draining"))
        self.record = rec

    def move(self, to: WorkerState, now_s: float, reason: str) -> None:
        """``transition`` to ``to`` (STOPPED holds no job: what it held was handed back or reclaimed)."""
        rec = transition(self.record, to, now_s, reason)
        self.record = replace(rec, jobs=frozenset()) if to is WorkerState.STOPPED else rec

    def view(self, endpoint: str) -> dict[str, Any]:
        rec = self.record
        if not is_active(rec.state):
            reason = rec.reason
        else:
            wanted = f": a {self.gpu_type} GPU" if self.gpu_type else ""
            if self.pending_placement:
                starting = f"waiting for resources (pending placement{wanted})"
            elif self.setting_up:
                starting = f"setting up: {self.setup}"
            elif self.loading_since_s is not None:
                starting = "starting: loading handler"
            else:  # not looked at yet (the pool checks a start after ``pending_check_s``)
                starting = "starting"
            reason = self.info.get("reason") or starting
        return {
            "workerId": rec.worker_id,
            "endpoint": endpoint,
            "kind": rec.kind,
            "state": rec.state.value,
            "health": rec.health.state.value,
            "coldStartS": rec.cold_start_s,
            "nodeId": rec.node_id,
            "actorId": self.actor_id,  # its logs, also while starting or after a failed load
            "pendingPlacement": self.pending_placement,
            "settingUp": self.setting_up,
            "setup": self.setup if self.setting_up else None,
            "gpuType": self.info.get("gpuType") or self.gpu_type,
            "version": self.version,
            "reason": reason,
            "error": self.error,
        }


async def adopt(
    endpoint: str,
    namespace: str,
    known_actor_ids: Collection[str],
    gpus_of: Callable[[int], float],
    default_version: int,
    now_s: float,
) -> tuple[list[TrackedReplica], list[str]]:
    """The running replicas of ``endpoint`` found by name that are not among ``known_actor_ids``, as
    :class:`TrackedReplica` in the state each reports; and the names of those killed: an ALIVE one that did
    not answer ``status`` within ``ADOPT_STATUS_TIMEOUT_S``, or one that reports it stopped (its leases
    expire or were handed back). A replica still in its constructor (placement pending, handler loading)
    is adopted STARTING with a ``ready_ref``, as a fresh start; one that loaded but was never told to
    ``run`` too (its ``ready`` resolves at once). A serving or draining one is adopted ``ready``, its
    ``run_ref`` the replica's ``wait_stopped``. ``gpus_of(version)``: the GPUs a replica of that version
    holds; ``default_version``: the version assumed for one that has not reported yet."""
    found = []
    for name, ep, wid in named_replicas(namespace):
        if ep != endpoint:
            continue
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        if str(handle._actor_id.hex()) not in known_actor_ids:
            found.append((name, wid, handle))
    states = [ray_cluster.actor_state(h._actor_id.hex()) for _, _, h in found]
    infos = await asyncio.gather(
        *(_none() if s in PENDING_STATES else _status(h) for (_, _, h), s in zip(found, states, strict=True))
    )
    adopted: list[TrackedReplica] = []
    killed: list[str] = []
    for (name, wid, handle), state, info in zip(found, states, infos, strict=True):
        if state in PENDING_STATES:
            rec = new_worker(wid, endpoint, "ray", now_s, reason="adopted: loading handler")
            version = default_version
            adopted.append(_tracked(rec, handle, handle.ready.remote(), version, gpus_of(version)))
            continue
        reported = parse_state(info.get("state")) if info is not None else None
        if info is None or reported is None or not is_live(reported):
            with contextlib.suppress(Exception):
                ray.kill(handle, no_restart=True)
            killed.append(name)
            log.warning("replica %s (%s) %s: killed", name, state, "stopped" if info else "did not answer")
            continue
        version = int(info.get("version") or 0)
        started_s = float(info.get("startedAt") or now_s * 1000) / 1000
        if reported is WorkerState.STARTING:  # loaded, but its ``run`` was never called
            rec = new_worker(wid, endpoint, "ray", started_s, reason="adopted: handler loaded")
            adopted.append(_tracked(rec, handle, handle.ready.remote(), version, gpus_of(version)))
            continue
        rec = new_worker(
            wid,
            endpoint,
            "ray",
            started_s,
            state=WorkerState.IDLE,
            concurrency=max(1, int(info.get("concurrency") or 1)),
            node_id=info.get("nodeId"),
            reason="adopted",
        )
        r = _tracked(rec, handle, None, version, gpus_of(version))
        r.ready, r.run_ref, r.gpu_type = True, handle.wait_stopped.remote(), info.get("gpuType")
        r.follow(info, now_s)
        adopted.append(r)
    return adopted, killed


def _tracked(rec: WorkerRecord, handle: Any, ready_ref: Any, version: int, gpus: float) -> TrackedReplica:
    return TrackedReplica(rec, handle, ready_ref, version=version, gpus=gpus, adopted=True)


async def _status(handle: Any) -> dict[str, Any] | None:
    try:
        info = await asyncio.wait_for(handle.status.remote(), ADOPT_STATUS_TIMEOUT_S)
    except Exception:
        return None
    return info if isinstance(info, dict) else None


async def _none() -> None:
    return None


def check_placement(r: TrackedReplica, now_s: float, demands: Sequence[Mapping[str, float]] | None) -> None:
    """Created but waiting for resources (pending placement), granted them and being set up (its runtime
    env, its process), or running and loading its handler (since when): :func:`start_stage`, with the
    cluster's pending resource ``demands`` (None: unknown)."""
    state, has_process = ray_cluster.actor_placement(r.actor_id)
    stage = start_stage(has_process, r.asked, demands) if state in PENDING_STATES else Start.RUNNING
    r.pending_placement = stage is Start.WAITING
    r.setting_up = stage is Start.SETTING_UP
    if has_process and r.loading_since_s is None:
        r.loading_since_s = now_s


def versioned(r: TrackedReplica, draining_nodes: dict[str, int]) -> VersionedReplica:
    """A replica as :func:`orchestrator.core.rollout.plan_rollout` sees it."""
    info = ReplicaInfo(
        id=r.worker_id,
        state=r.record.state,
        health=r.record.health.state,
        jobs_held=len(r.record.jobs),
        idle_since_s=r.info.get("idleSince"),
        node_draining=bool(r.record.node_id and r.record.node_id in draining_nodes),
        pending_placement=r.pending_placement,
    )
    loading = r.loading_since_s if not r.ready else None
    return VersionedReplica(info, r.version, r.gpus, loading)


def gpu_capacity(replicas: Iterable[TrackedReplica]) -> dict[str, TypeCapacity]:
    """The cluster's GPUs per type, less what ``replicas`` still waiting for placement will take (Ray
    counts them only once placed)."""
    capacity = ray_cluster.gpu_inventory()
    for r in replicas:
        if r.pending_placement and r.gpu_type is not None and r.gone_s is None:
            debit(capacity, r.gpu_type, r.gpus)
    return capacity


def debit(capacity: dict[str, TypeCapacity], gpu_type: str, gpus: float) -> None:
    """Take ``gpus`` of ``gpu_type`` off ``capacity`` (a start this tick, or one awaiting placement)."""
    c = capacity.get(gpu_type)
    if c is not None:
        capacity[gpu_type] = replace(c, free=c.free - gpus, largest_free=max(0.0, c.largest_free - gpus))


def short(exc: BaseException) -> str:
    """What an error says failed, in one line of at most 300 characters (:func:`error_line`)."""
    return error_line(str(exc)) or type(exc).__name__
