"""WorkerPool: one actor per endpoint (``pool:<endpoint>``) that runs its WorkerReplica actors.

Each tick it observes its replicas (placed or pending, serving, draining, dead) and the cluster's draining
nodes, asks :func:`orchestrator.core.rollout.plan_rollout` (which sizes a pool of one version with
:func:`orchestrator.core.pool_plan.plan`) what to start and drain for the target the autoscaler set
(``minReplicas`` while no target is set), and applies that. The pool is detached and restarted by Ray.
Replicas are detached too, named ``worker:<endpoint>:<suffix>``: they outlive a pool's death (and the
head node's loss), and a pool that starts adopts the ones running before its first plan
(:func:`actors.pool_replicas.adopt`), so a restart replaces nothing. Detached actors live until killed:
the pool kills each replica once it stopped, was drained or closed (see ``docs/head-loss.md``).

Versions: every replica runs one version of the endpoint (``spec.version``; its handler, runtime env and
resources as they were in that version) and says so in its state. When the spec names a new version the
pool rolls over to it (surge, or one replica at a time with no spare GPU; see ``core/rollout.py``) and
reports the outcome to the queue (``report_version_state``: ``active`` once it serves, ``failed`` with the
error when its replicas cannot start, the stable version then serving at full size again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import ray

from actors import ray_cluster
from actors.options import control_options
from actors.pool_replicas import (
    TrackedReplica,
    adopt,
    check_placement,
    debit,
    gpu_capacity,
    kill_replicas,
    replica_actor_name,
    short,
    versioned,
)
from actors.pool_versions import PoolVersions
from actors.queue_adapters import AutoscalerByName
from actors.replica import QUEUE_RESTART_WAIT_S, ReplicaConfig, WorkerReplica
from orchestrator import logs
from orchestrator.core import health as hs
from orchestrator.core.gpu_types import TypeCapacity, pick_gpu_type, placement_options
from orchestrator.core.models import EndpointSpec
from orchestrator.core.replica_start import asked_resources, setup_activity
from orchestrator.core.rollout import (
    DEFAULT_READY_TIMEOUT_S,
    FailedStart,
    RolloutPolicy,
    RolloutStatus,
    plan_rollout,
)
from orchestrator.core.workers import (
    WorkerState,
    absorb_report,
    held_by_stopped_code,
    is_active,
    is_live,
    new_worker,
)
from orchestrator.names import QUEUE_NAME, get_actor, pool_name
from orchestrator.ray_metrics import RaySink

log = logging.getLogger("ripple.pool")
MIB = 1024 * 1024
START_BACKOFF_S = 1.0  # after a failed start (the handler did not load): 1, 2, 4, ... s before the next
START_BACKOFF_MAX_S = 60.0
GONE_LINGER_MAX_S = 30.0  # a stopped replica whose actor Ray never reports dead is forgotten after this
GONE_RELEASE_MAX_S = 5.0  # how long a dead replica's GPUs may take to show as available on its node
GONE_TICK_S = 0.1  # reconcile this often while a stopped replica's GPUs are being released


def resource_options(spec: EndpointSpec) -> dict[str, Any]:
    """The Ray resources a replica of ``spec`` asks for, as actor options (``num_gpus``, ``num_cpus``,
    ``memory``); a GPU type adds its own when it is started."""
    opts: dict[str, Any] = {"num_gpus": spec.gpus, "num_cpus": spec.cpus}
    if spec.memory_mb:
        opts["memory"] = spec.memory_mb * MIB
    return opts


@dataclass(frozen=True)
class PoolConfig:
    """Settings of every pool."""

    namespace: str
    take_wait_s: float = 5.0
    heartbeat_s: float = 5.0
    drain_timeout_s: float = 600.0
    tick_s: float = 1.0
    pending_check_s: float = 2.0
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S  # a new version's replica loading longer: failed
    max_gpus: float | None = None  # the GPU budget (``autoscaler.max_gpus``): a rollout's surge stays within
    # How long a replica retries its queue calls while the queue is away (a restart, a head loss): set to
    # the heartbeat timeout when that is longer, as the replica's leases outlive the queue that long.
    queue_retry_s: float = QUEUE_RESTART_WAIT_S
    # A ready replica that answers neither ``status`` nor ``liveness`` this long is lost (killed,
    # replaced): its process is wedged, it neither heartbeats nor takes, and would hold its GPUs for good.
    # Twice the heartbeat timeout: the queue has taken its jobs back by then.
    unresponsive_s: float = 120.0


class WorkerPool:
    """See the module docstring."""

    def __init__(self, endpoint: str, cfg: PoolConfig) -> None:
        self.endpoint = endpoint
        self.cfg = cfg
        self.queue = get_actor(QUEUE_NAME, cfg.namespace)
        self.autoscaler = AutoscalerByName(cfg.namespace)
        self.replicas: dict[str, TrackedReplica] = {}
        self.target: int | None = None
        self.spec: EndpointSpec | None = None
        self.last_errors: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.start_failures = 0  # failed starts in a row (reset by a good start or an endpoint update)
        self.next_start_s = 0.0
        self.failed_spec: EndpointSpec | None = None
        self.versions = PoolVersions(endpoint)
        self._adopted = False
        logs.configure("INFO")  # JSON lines in the actor's log file
        self.ray_metrics = RaySink()

    async def start(self) -> bool:
        """Start the reconcile loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    async def set_target(self, replicas: int | None) -> None:
        """The autoscaler's target (None: ``minReplicas``); reconciled at once."""
        await self.start()
        self.target = replicas
        self._wake.set()

    async def workers(self) -> list[dict[str, Any]]:
        return [r.view(self.endpoint) for r in self.replicas.values()]

    async def summary(self) -> dict[str, Any]:
        """Counts for the autoscaler: replicas by state with held jobs and idle times."""
        await self.start()
        # An old replica a new one already replaces is reported leaving ("draining", "retiring"): the
        # autoscaler counts the replicas that stay, so a rollout's surge never raises its target.
        retiring = self.versions.retiring
        return {
            "endpoint": self.endpoint,
            "target": self.target,
            "replicas": [
                {
                    "id": r.worker_id,
                    "state": "draining" if r.worker_id in retiring else r.record.state.value,
                    "jobsHeld": len(r.record.jobs),
                    "heldByStopped": held_by_stopped_code(r.info),
                    "idleSince": r.info.get("idleSince"),
                    "pendingPlacement": r.pending_placement,
                    "health": r.record.health.state.value,
                    "coldStartS": r.record.cold_start_s,
                    "gpuType": r.info.get("gpuType") or r.gpu_type,
                    "version": r.version,
                    "retiring": r.worker_id in retiring,
                    "adopted": r.adopted,
                    "actorId": r.actor_id,
                }
                for r in self.replicas.values()
            ],
            "rollout": self.versions.summary(),
            "errors": self.last_errors[-5:],
            "startFailures": self.start_failures,
            "startBackoffS": round(max(0.0, self.next_start_s - time.time()), 3),
        }

    async def drain(self, worker_ids: list[str], reason: str, target: int | None = None) -> list[str]:
        """Drain these replicas (the autoscaler's scale-down and preemption), and hold ``target`` replicas
        from now on when given. The target and the drains change together, before anything awaits, so a
        reconcile step never sees the drains with the old target (and never starts replacements)."""
        if target is not None:
            self.target = target
        picked = [r for wid in worker_ids if (r := self.replicas.get(wid)) is not None and not r.draining]
        now_s = time.time()
        for r in picked:
            r.move(WorkerState.DRAINING, now_s, f"draining: {reason}")
        for r in picked:
            await self._drain(r, reason, self.cfg.drain_timeout_s)
        return [r.worker_id for r in picked]

    async def close(self, timeout_s: float) -> int:
        """Drain every replica (jobs finish within ``timeout_s``) and stop; returns how many were drained."""
        self._closing = True
        try:
            for r in list(self.replicas.values()):
                if not r.draining:
                    await self._drain(r, "pool closing", timeout_s)
            deadline = time.monotonic() + timeout_s + 5
            while self.replicas and time.monotonic() < deadline:
                try:
                    await self._observe()
                except Exception:  # e.g. the queue refusing reports of a deleted endpoint: keep stopping
                    log.debug("pool %s: observing while closing failed", self.endpoint, exc_info=True)
                await asyncio.sleep(0.2)
        finally:  # whatever happened, no replica outlives its pool's close
            n = len(self.replicas)
            for r in list(self.replicas.values()):
                ray.kill(r.handle, no_restart=True)
        return n

    # Reconcile --------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        failures = logs.RepeatedFailure(log, f"pool {self.endpoint} tick", time.monotonic)
        while not self._closing:
            self._wake.clear()  # before the tick: a wake during the tick runs the next one at once
            try:
                await self.tick()
                failures.succeeded()
            except Exception as exc:
                failures.failed(exc)
                with contextlib.suppress(Exception):  # shown as the endpoint's problem (pool_error)
                    await self.queue.report_pool_problem.remote(self.endpoint, f"{type(exc).__name__}: {exc}")
            # While a stopped replica's GPUs are being released, look often: the autoscaler is told the
            # moment they are free (_reap), which is what an endpoint preempting this one waits for.
            releasing = any(r.gone_s is not None for r in self.replicas.values())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), GONE_TICK_S if releasing else self.cfg.tick_s)

    async def tick(self) -> dict[str, Any]:
        """One reconcile step: observe, plan, apply. Returns what it did."""
        specs = await self.queue.endpoint_specs.remote()
        self.spec = specs.get(self.endpoint)
        if self.spec is not None and not self.versions.loaded:
            await self.versions.load(self.queue, self.spec)
        if not self._adopted:
            await self._adopt()
        await self._observe()
        if self._closing:  # close() drains every replica it sees: start none after it began
            return {"desired": 0, "started": 0, "drained": [], "rollout": None}
        draining_nodes = ray_cluster.draining_nodes()
        # From reading the target to starting replicas nothing awaits: a drain() with a new target that
        # arrives meanwhile would otherwise be planned against the old target and replaced at once.
        spec = self.spec
        if spec is None or spec.handler is None:
            desired = 0
        else:
            base = spec.min_replicas if self.target is None else self.target
            desired = max(spec.min_replicas, min(spec.max_replicas, base))
        now_s = time.time()
        ready = sum(1 for r in self.replicas.values() if r.ready and is_active(r.record.state))
        version = self.versions.target(spec, ready)
        target = self.versions.rollout_target(spec, version, desired, self._gpus_free)
        replicas = [versioned(r, draining_nodes) for r in self.replicas.values()]
        rp = plan_rollout(replicas, target, now_s, RolloutPolicy(ready_timeout_s=self.cfg.ready_timeout_s))
        if self.start_failures and self.spec != self.failed_spec:
            self.start_failures, self.next_start_s = 0, 0.0  # the endpoint changed: try at once
        if rp.status is RolloutStatus.HALTED:
            self.start_failures, self.next_start_s = 0, 0.0  # the failures were the abandoned version's
        starts = rp.starts if spec is not None and spec.handler and now_s >= self.next_start_s else ()
        for vs in starts:  # (backing off after failed starts: no crash loop)
            vspec = self.versions.spec_of(vs.version, spec)
            assert vspec is not None
            capacity = gpu_capacity(self.replicas.values()) if vspec.gpu_types else {}
            for _ in range(vs.count):
                self._start(vspec, vs.version, capacity)
        for d in rp.drains:
            r = self.replicas[d.replica_id]
            deadline = draining_nodes.get(r.record.node_id or "", 0)
            timeout = (deadline / 1000 - now_s) if deadline else self.cfg.drain_timeout_s
            await self._drain(r, d.reason, max(1.0, timeout - 2.0))
        await self.versions.outcome(rp, self.queue, self.spec)
        await self._report()
        started = sum(vs.count for vs in starts)
        return {"desired": desired, "started": started, "drained": list(rp.to_drain), "rollout": rp.status}

    async def _adopt(self) -> None:
        """Once per pool, before its first plan: adopt the replicas of this endpoint that run without a
        pool (this pool's previous instance died, or the head node was lost), so that they count toward
        the target instead of being replaced; kill the ones that do not answer."""
        known = {r.actor_id for r in self.replicas.values()}
        spec = self.spec
        default_version = spec.version if spec is not None else 0

        def gpus_of(version: int) -> float:
            vspec = self.versions.spec_of(version, spec)
            return vspec.gpus if vspec is not None else 0.0

        adopted, killed = await adopt(
            self.endpoint, self.cfg.namespace, known, gpus_of, default_version, time.time()
        )
        self._adopted = True
        for r in adopted:
            self.replicas[r.worker_id] = r
            vspec = self.versions.spec_of(r.version, spec)
            if not r.ready and vspec is not None:  # it may be being set up: what it asks and installs
                r.asked = asked_resources(resource_options(vspec))
                r.setup = setup_activity(vspec.runtime_env)
            if r.run_ref is not None:
                asyncio.get_running_loop().create_task(self._tick_when_done(r.run_ref))
            if r.ready_ref is not None:
                asyncio.get_running_loop().create_task(self._tick_when_done(r.ready_ref))
        if adopted or killed:
            log.info(
                "pool %s adopted %d running replicas (%s), killed %d not answering",
                self.endpoint,
                len(adopted),
                ", ".join(f"{r.worker_id} {r.record.state.value} v{r.version}" for r in adopted),
                len(killed),
                extra={"endpoint": self.endpoint},
            )

    def _gpus_free(self, vspec: EndpointSpec | None) -> float:
        """GPUs a rollout may still take for replicas of ``vspec``: free on the cluster (of its GPU types
        when it names some), within the GPU budget, less what this pool's replicas awaiting placement will
        take."""
        total, available = ray_cluster.gpus()
        free = available
        if vspec is not None and vspec.gpu_types:
            inventory = ray_cluster.gpu_inventory()
            free = sum(inventory[t].free for t in vspec.gpu_types if t in inventory)
        if self.cfg.max_gpus is not None:
            free = min(free, self.cfg.max_gpus - (total - available))
        pending = sum(r.gpus for r in self.replicas.values() if r.pending_placement and r.gone_s is None)
        return free - pending

    def _start(self, spec: EndpointSpec, version: int, capacity: dict[str, TypeCapacity]) -> None:
        """Start one replica of ``version`` (whose runtime fields ``spec`` has). With ``gpuTypes`` it asks
        for the first type with a free GPU in ``capacity`` (which this start then debits, so the next start
        of the same tick falls back down the list)."""
        wid = f"{self.endpoint}-{uuid.uuid4().hex[:8]}"
        opts: dict[str, Any] = {
            "name": replica_actor_name(self.endpoint, wid),
            "namespace": self.cfg.namespace,
            "lifetime": "detached",  # owned by the GCS: it outlives this pool (adopted by the next one)
            **resource_options(spec),
            "max_restarts": 0,
            "max_task_retries": 0,
            "max_concurrency": spec.concurrency + 16,
        }
        if spec.runtime_env:
            opts["runtime_env"] = spec.runtime_env
        gpu_type = None
        if spec.gpu_types:
            gpu_type = pick_gpu_type(spec.gpu_types, capacity, spec.gpus)
            opts.update(placement_options(gpu_type, spec.gpus, capacity))
            debit(capacity, gpu_type, spec.gpus)
        cfg = ReplicaConfig(
            self.endpoint,
            wid,
            spec.handler or "",
            spec.concurrency,
            self.cfg.namespace,
            self.cfg.take_wait_s,
            self.cfg.heartbeat_s,
            gpu_type=gpu_type,
            version=version,
            queue_retry_s=self.cfg.queue_retry_s,
        )
        handle = _REPLICA_CLASS.options(**opts).remote(cfg)
        ready_ref = handle.ready.remote()
        record = new_worker(
            wid, self.endpoint, "ray", time.time(), concurrency=spec.concurrency, reason="loading handler"
        )
        self.replicas[wid] = TrackedReplica(
            record,
            handle,
            ready_ref,
            gpu_type=gpu_type,
            version=version,
            gpus=spec.gpus,
            asked=asked_resources(opts),
            setup=setup_activity(spec.runtime_env),
        )
        log.info("pool %s started replica %s of v%d", self.endpoint, wid, version)
        asyncio.get_running_loop().create_task(self._tick_when_done(ready_ref))

    async def _tick_when_done(self, ref: Any) -> None:
        """Reconcile as soon as ``ref`` resolves: a replica placed and loaded starts serving at once, and
        a replica whose ``run`` returned (drained, died) is stopped and its GPUs released at once, rather
        than at the next tick."""
        with contextlib.suppress(Exception):  # a failure is handled by the tick it wakes
            await ref
        self._wake.set()

    async def _drain(self, r: TrackedReplica, reason: str, timeout_s: float) -> None:
        if is_active(r.record.state):
            r.move(WorkerState.DRAINING, time.time(), f"draining: {reason}")
        if not r.ready:
            ray.kill(r.handle, no_restart=True)  # never placed or still loading: nothing to finish
            return
        try:
            await self.queue.drain_worker.remote(r.worker_id)
        except Exception:
            log.debug("queue did not know %s yet", r.worker_id)
        r.handle.drain.remote(timeout_s)

    async def _observe(self) -> None:
        now_s = time.time()
        demands: list[dict[str, float]] | None = None  # the cluster's pending demand, read once a tick
        demands_read = False
        for wid, r in list(self.replicas.items()):
            if r.gone_s is not None:
                self._reap(r, now_s)
                continue
            if not r.ready:
                done, _ = ray.wait([r.ready_ref], timeout=0)
                if done:
                    try:
                        info = ray.get(done[0])
                    except Exception as exc:
                        if not r.draining:  # not one we stopped ourselves before it was ready
                            self._start_failed(now_s)
                            failure = FailedStart(r.worker_id, r.version, short(exc))
                            self.versions.failed_start(failure)
                        await self._lost(r, f"failed to start: {short(exc)}", str(exc))
                        continue
                    self._ready(r, info, now_s)
                elif now_s - r.record.started_s > self.cfg.pending_check_s:
                    if not demands_read:
                        demands, demands_read = ray_cluster.resource_demands(), True
                    check_placement(r, now_s, demands)
                continue
            done, _ = ray.wait([r.run_ref], timeout=0)
            if done:
                await self._run_ended(r, done[0])
                continue
            try:
                info = await asyncio.wait_for(r.handle.status.remote(), 2.0)
            except Exception:
                log.debug("status of %s unavailable", wid)
                await self._unanswered(r)
                continue
            r.answered_s = time.time()
            r.follow(info, r.answered_s)
            if int(r.info.get("stuck", 0)) >= int(r.info.get("concurrency", 1)):
                # every thread hangs in a stopped job: replace it (_lost kills it)
                await self._lost(r, "hung past its jobs' execution timeout; replaced", None)

    async def _unanswered(self, r: TrackedReplica) -> None:
        """A ready replica's ``status`` went unanswered (its event loop is blocked, or gone): asked off that
        loop (``liveness``), and lost or left as :func:`health.unanswered_verdict` says."""
        now_s = time.time()
        try:
            live = await asyncio.wait_for(r.handle.liveness.remote(), 2.0)
        except Exception:
            live = None
        silent_s = now_s - r.answered_s
        if live is not None:
            r.answered_s = now_s
        verdict = hs.unanswered_verdict(live, silent_s, self.cfg.heartbeat_s, self.cfg.unresponsive_s)
        if verdict is not None:
            await self._lost(r, *verdict)

    async def _run_ended(self, r: TrackedReplica, run_ref: Any) -> None:
        """A replica's ``run`` returned (drained) or raised (its process died, or its loop failed: killed)."""
        try:
            summary = ray.get(run_ref)
        except Exception as exc:
            await self._lost(r, f"died: {short(exc)}", None)
            return
        # A replica whose job asked for refresh_worker drained itself: it no longer counts toward the
        # target, so a fresh replica replaces it, as RunPod restarts the worker.
        refresh = summary.get("refresh") if isinstance(summary, dict) else None
        await self._stopped(r, f"replaced: {refresh}" if refresh else "drained")
        if refresh:
            self._wake.set()

    def _ready(self, r: TrackedReplica, info: dict[str, Any], now_s: float) -> None:
        """Its handler loaded (``ready`` returned ``info``): -> IDLE (unless drained meanwhile), and serve."""
        r.ready, r.pending_placement, r.setting_up = True, False, False
        r.answered_s = now_s
        self.start_failures, self.next_start_s = 0, 0.0
        if r.record.state is WorkerState.STARTING:
            r.move(WorkerState.IDLE, now_s, "handler loaded")
        # the cold start is the replica's own measure (its handler import), not its placement
        r.record = absorb_report(r.record, info)
        r.gpu_type = info.get("gpuType") or r.gpu_type
        r.version = int(info.get("version") or r.version)  # an adopted one's, assumed until now
        self.ray_metrics.observe(
            "ripple_worker_cold_start_seconds", {"endpoint": self.endpoint}, float(info["coldStartS"])
        )
        log.info(
            "replica ready, cold start %.3f s",
            info["coldStartS"],
            extra={"worker_id": r.worker_id, "endpoint": self.endpoint},
        )
        r.run_ref = r.handle.run.remote()
        asyncio.get_running_loop().create_task(self._tick_when_done(r.run_ref))

    def _start_failed(self, now_s: float) -> None:
        self.start_failures += 1
        self.failed_spec = self.spec
        backoff_s = min(START_BACKOFF_MAX_S, START_BACKOFF_S * 2 ** (self.start_failures - 1))
        self.next_start_s = now_s + backoff_s
        log.warning(
            "pool %s: start failed %d times in a row; next in %g s",
            self.endpoint,
            self.start_failures,
            backoff_s,
        )

    def _reap(self, r: TrackedReplica, now_s: float) -> None:
        """Drop a stopped replica once its actor is dead: its GPUs are free only then, and until then the
        autoscaler must count them as held, or it would preempt a second replica for the same want."""
        assert r.gone_s is not None
        waited_s = now_s - r.gone_s
        dead = ray_cluster.actor_state(r.handle._actor_id.hex()) in ("DEAD", "UNKNOWN")
        if not dead and waited_s <= GONE_LINGER_MAX_S:
            return
        if not dead:  # killed long ago and still listed alive: ask again rather than lose track of it
            ray.kill(r.handle, no_restart=True)
        # Ray marks a killed actor dead before its process exits and its GPUs show as available.
        gpus = r.gpus
        node_id = r.record.node_id
        releasing = gpus > 0 and node_id and waited_s <= GONE_RELEASE_MAX_S
        if releasing and ray_cluster.node_available(node_id or "", "GPU") < gpus:
            return
        self.replicas.pop(r.worker_id, None)
        if gpus > 0:  # GPUs freed: the autoscaler places waiting work now, not at its next tick
            self.autoscaler.work_arrived(self.endpoint)

    def _forget(self, r: TrackedReplica, reason: str) -> None:
        """Stop counting a replica: -> STOPPED; it stays listed until its actor is dead (``_reap``)."""
        if is_live(r.record.state):
            r.move(WorkerState.STOPPED, time.time(), reason)

    async def _stopped(self, r: TrackedReplica, reason: str) -> None:
        self._forget(r, reason)
        ray.kill(r.handle, no_restart=True)
        await self.queue.report_workers.remote(self.endpoint, [r.view(self.endpoint)])

    async def _lost(self, r: TrackedReplica, reason: str, error: str | None) -> None:
        """A replica that failed to start, hung, or whose ``run`` raised: stopped and killed. Its process may
        well be alive (an exception, not a death): a detached actor outlives everything but a kill, and
        would hold its GPUs for good."""
        self._forget(r, reason)
        ray.kill(r.handle, no_restart=True)
        if error:
            self.last_errors.append({"workerId": r.worker_id, "at": time.time(), "error": error[-4000:]})
            self.last_errors = self.last_errors[-20:]
        log.warning("replica %s %s", r.worker_id, reason)
        try:
            await self.queue.worker_gone.remote(r.worker_id, reason)
        except Exception:
            log.debug("queue did not know %s", r.worker_id)
        await self.queue.report_workers.remote(self.endpoint, [{**r.view(self.endpoint), "error": error}])

    async def _report(self) -> None:
        records = [r.view(self.endpoint) for r in self.replicas.values() if not r.ready and r.gone_s is None]
        if records:
            await self.queue.report_workers.remote(self.endpoint, records)


# Exported once per pool process, not once per start. The ``control`` group answers ``liveness`` on a thread
# of its own, while the replica's event loop may be blocked.
_REPLICA_CLASS = ray.remote(concurrency_groups={"control": 1})(WorkerReplica)


def ensure_pool(endpoint: str, cfg: PoolConfig) -> Any:
    """Get or create the pool actor of an endpoint and start its loop."""
    handle = (
        ray.remote(WorkerPool)
        .options(**control_options(cfg.namespace, pool_name(endpoint), 1000))
        .remote(endpoint, cfg)
    )
    handle.start.remote()
    return handle


def drain_all_pools(namespace: str, timeout_s: float) -> int:
    """Drain every pool of the namespace (graceful shutdown), then kill the pools and any replica actor
    still running (detached: one no pool had adopted would otherwise outlive Ripple); returns replicas
    drained."""
    from ray.util import list_named_actors

    handles = []
    for entry in list_named_actors(all_namespaces=True):
        if entry.get("namespace") == namespace and str(entry.get("name", "")).startswith("pool:"):
            handles.append(ray.get_actor(entry["name"], namespace=namespace))
    counts = ray.get([h.close.remote(timeout_s) for h in handles], timeout=timeout_s + 30) if handles else []
    for h in handles:
        ray.kill(h, no_restart=True)
    leftover = kill_replicas(namespace)
    if leftover:
        log.info("killed %d replicas no pool held: %s", len(leftover), ", ".join(leftover))
    return int(sum(counts))
