"""The Autoscaler actor: the one controller of the cluster (``ripple-autoscaler``, named, detached).

Each tick — every ``interval_s`` and within milliseconds of a queue event — it gathers a snapshot (endpoint
specs, queue stats, pool summaries, Ray's GPUs), calls the pure :func:`orchestrator.core.autoscale.decide`,
saves the returned state, records every decision with its reason, then applies: one WorkerPool per endpoint
with a handler (created and removed here), its target and drains. Its state lives in the store
(:mod:`orchestrator.store.autoscaler`; this actor never talks to Redis itself). Only the holder of the
store's leadership lease acts, so a second instance (a restart racing the old one) never acts at once.
Settings arrive typed (:class:`orchestrator.config.AutoscalerSettings` in the :class:`BootConfig`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import ray

from actors import ray_cluster, warm_workers
from actors.options import control_options
from actors.pool import PoolConfig, ensure_pool
from actors.pool_replicas import kill_orphan_replicas
from actors.replica import QUEUE_RESTART_WAIT_S
from orchestrator import logs
from orchestrator.boot import BootConfig
from orchestrator.control_metrics import TickMemory, queue_gauges, tick_samples, wait_facts
from orchestrator.core.autoscale import (
    AutoscalerState,
    Blocked,
    decide,
    decision_to_dict,
)
from orchestrator.core.autoscale.priority import effective_priority
from orchestrator.core.autoscale.snapshot import build_snapshot, pool_actions
from orchestrator.core.models import EndpointSpec
from orchestrator.core.standby import node_by_id, replica_standby_nodes
from orchestrator.metrics import published
from orchestrator.names import AUTOSCALER_NAME, QUEUE_NAME, get_actor, pool_name
from orchestrator.ray_metrics import RaySink
from orchestrator.store.autoscaler import AutoscalerStore, RedisAutoscalerStore

log = logging.getLogger("ripple.autoscaler")
ORPHAN_SWEEP_TICKS = 20  # replicas of deleted endpoints (detached, no pool left to kill them) are swept
CONTROL_STANDBY_DELAY_S = 5.0  # when the standby for the next pool is asked, after starting or creating one


class Autoscaler:
    """See the module docstring."""

    def __init__(self, boot: BootConfig) -> None:
        self.boot = boot
        self.settings = boot.autoscaler
        self.interval_s = self.settings.interval_s
        self.config = self.settings.policy()
        self.store: AutoscalerStore = RedisAutoscalerStore.connect(
            boot.queue.redis_url, boot.queue.key_prefix, boot.queue.store_retry_s
        )
        self.queue = get_actor(QUEUE_NAME, boot.namespace)
        self.pool_cfg = PoolConfig(
            namespace=boot.namespace,
            take_wait_s=min(5.0, boot.take_wait_s),
            heartbeat_s=max(0.5, boot.queue.heartbeat_timeout_s / 4),
            drain_timeout_s=boot.drain_timeout_s,
            ready_timeout_s=boot.ready_timeout_s,
            max_gpus=self.settings.max_gpus,
            queue_retry_s=max(QUEUE_RESTART_WAIT_S, boot.queue.heartbeat_timeout_s),
            unresponsive_s=2 * boot.queue.heartbeat_timeout_s,
        )
        self.pools: dict[str, Any] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}  # deleted endpoints' pools, draining
        self.instance = uuid.uuid4().hex
        self.state: AutoscalerState | None = None
        self.last: dict[str, Any] = {}
        self.last_blocked: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ticks = 0
        self._adopted = False
        self.leader = False  # whether the latest tick held the leadership lease
        self.leased = False  # whether a tick has asked for it yet
        self._pool_created: dict[str, asyncio.Event] = {}  # endpoint -> set once its pool is created
        self._standby_tasks: set[asyncio.Task[int]] = set()
        logs.configure("INFO")  # JSON lines in the actor's log file
        self.ray_metrics = RaySink()
        self.metric_memory = TickMemory()
        # Ray runs an async actor's constructor on its event loop: start ticking here, so that an instance
        # Ray restarted (after a crash) resumes by itself instead of waiting for someone to call start().
        with contextlib.suppress(RuntimeError):  # constructed outside an event loop: start() does it
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def start(self) -> bool:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    async def notify(self, endpoint: str) -> None:
        """A queue event (work arrived where nothing serves it): tick now."""
        self._wake.set()

    async def _loop(self) -> None:
        failures = logs.RepeatedFailure(log, "autoscaler tick", time.monotonic)
        while True:
            self._wake.clear()  # before the tick: an event during the tick runs the next one at once
            try:
                await self.tick()
                failures.succeeded()
            except Exception as exc:  # a tick never kills the loop
                failures.failed(exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            await asyncio.sleep(0.02)  # coalesce bursts of events

    async def _leader(self) -> bool:
        """Hold (take or renew) the leadership lease; a lease outlives a few missed ticks."""
        ttl_ms = int(max(10.0, self.interval_s * 5) * 1000)
        return await self.store.hold_lease(self.instance, ttl_ms)

    async def enabled(self) -> bool:
        switch = await self.store.switch()
        return self.settings.enabled if switch is None else switch

    async def tick(self) -> dict[str, Any]:
        """Gather, decide, save, apply. Returns a summary of what it did."""
        self.leader = await self._leader()
        self.leased = True
        if not self.leader:
            return {"leader": False}
        self.ticks += 1
        specs = await self.queue.endpoint_specs.remote()
        managed = {n: s for n, s in specs.items() if s.handler is not None}
        await self._sync_pools(managed)
        stats = await self.queue.stats.remote()
        summaries = dict(
            zip(
                self.pools,
                await asyncio.gather(*(p.summary.remote() for p in self.pools.values())),
                strict=True,
            )
        )
        total, available = ray_cluster.gpus()
        gpu_types = ray_cluster.gpu_inventory()
        # On a cluster that grows (KubeRay, Ray's autoscaler), maxGpus is the budget Ripple plans with even
        # before those GPUs exist: replicas beyond today's GPUs wait for placement, which is exactly the
        # demand Ray's autoscaler acts on. Unset, Ripple plans with the GPUs the cluster has now.
        budget = self.settings.max_gpus
        growth = 0.0
        if budget is not None and budget > total:
            growth = budget - total
            available += growth
            total = budget
        if self.state is None:
            saved = await self.store.load_state()
            self.state = AutoscalerState.from_dict(saved) if saved else AutoscalerState()
        enabled = await self.enabled()
        snapshot = build_snapshot(
            time.time(),
            managed,
            stats,
            summaries,
            gpus_total=total,
            gpus_available=available,
            max_gpus=self.settings.max_gpus,
            max_cpus=self.settings.max_cpus,
            max_memory_mb=self.settings.max_memory_mb,
            enabled=enabled,
            config=self.config,
            overrides=await self.store.overrides(),
            gpu_types=gpu_types,
            gpus_growth=growth,
        )
        decisions, new_state = decide(snapshot, self.state)
        await self.store.save_state(new_state.to_dict())
        self.state = new_state
        await self._record(decisions, snapshot.now_s)
        actions = pool_actions(snapshot, decisions)
        if enabled:
            for action in actions:
                pool = self.pools[action.endpoint]
                if action.drain:
                    await pool.drain.remote(list(action.drain), "autoscaler", action.target)
                await pool.set_target.remote(action.target)
        self.last = {
            "at": snapshot.now_s,
            "snapshot": snapshot,
            "summaries": summaries,
            "stats": stats,
            "gpus": (total, available),
        }
        desired = (
            {a.endpoint: a.target for a in actions}
            if enabled
            else {ep: s.get("target") for ep, s in summaries.items()}
        )
        facts = wait_facts(
            summaries,
            decisions,
            enabled=enabled,
            gpus_total=total - growth,  # Ray's GPUs of today; maxGpus says how far the cluster grows
            gpus_free=available - growth,
            max_gpus=self.settings.max_gpus,
            gpu_types={t: (c.total, c.free) for t, c in gpu_types.items()},
            interval_s=self.interval_s,
        )
        await self._publish(summaries, stats, desired, (total, available), enabled, decisions, facts)
        return {"leader": True, "decisions": [decision_to_dict(d) for d in decisions]}

    async def _publish(
        self,
        summaries: dict[str, Any],
        stats: dict[str, Any],
        desired: dict[str, Any],
        gpus: tuple[float, float],
        enabled: bool,
        decisions: list[Any],
        facts: dict[str, Any],
    ) -> None:
        """This tick's metrics and wait facts: into the queue (one call) and Ray's metrics agent."""
        samples, self.metric_memory = tick_samples(
            summaries, desired, gpus[0], gpus[1], enabled, decisions, self.metric_memory
        )
        try:
            await self.queue.publish_metrics.remote(
                {**published(samples.gauges, samples.counters, samples.observations), "waitFacts": facts}
            )
        except Exception:  # metrics never fail a tick
            log.debug("publishing metrics to the queue failed", exc_info=True)
        for name, values in {**samples.gauges, **queue_gauges(stats)}.items():
            self.ray_metrics.set_gauge(name, values)
        for name, rows in samples.counters.items():
            for labels, amount in rows:
                self.ray_metrics.inc_labels(name, labels, amount)

    def _adopt_pools(self) -> None:
        """Pools a previous instance created (found by name): adopt them, so that one whose endpoint was
        deleted while no autoscaler ran is still closed instead of holding its GPUs forever."""
        from ray.util import list_named_actors

        prefix = pool_name("")
        for entry in list_named_actors(all_namespaces=True):
            name = str(entry.get("name", ""))
            if entry.get("namespace") != self.boot.namespace or not name.startswith(prefix):
                continue
            endpoint = name[len(prefix) :]
            if endpoint not in self.pools:
                try:
                    self.pools[endpoint] = ray.get_actor(name, namespace=self.boot.namespace)
                except ValueError:  # gone meanwhile
                    continue

    async def _sync_pools(self, managed: dict[str, Any]) -> None:
        if not self._adopted:
            self._adopt_pools()
            self._adopted = True
            # The first pool created starts in a ready process (asked a little later: `ripple up` deploys
            # the Serve app right after starting this actor, and Serve's actors would take it).
            self._standby(None, CONTROL_STANDBY_DELAY_S)
        for name, spec in managed.items():
            if name not in self.pools and name not in self._closing:  # re-created: after the old one closed
                self.pools[name] = ensure_pool(name, self.pool_cfg)
                self._forget(name)  # a new (or re-created) endpoint starts with no memory
                # This endpoint's first replica, and later the next pool, start in ready processes too
                # (the next pool's not while this one starts: a process start is CPU work on this node).
                self._standby(spec)
                self._standby(None, CONTROL_STANDBY_DELAY_S)
                self._pool_created.pop(name, asyncio.Event()).set()
        for name in [n for n in self.pools if n not in managed]:
            self._forget(name)
            self._closing[name] = asyncio.get_running_loop().create_task(
                self._close_pool(name, self.pools.pop(name))
            )
        if self.ticks % ORPHAN_SWEEP_TICKS == 1:  # the first tick, then now and then: a listing of the GCS
            for name in kill_orphan_replicas(self.boot.namespace, {*self.pools, *self._closing}):
                log.warning("killed replica %s: its endpoint no longer exists", name)

    async def _close_pool(self, endpoint: str, handle: Any) -> None:
        """Drain a deleted endpoint's pool (its jobs finish within the drain timeout), then kill it. Runs
        beside the ticks: other endpoints keep scaling meanwhile, and the next tick places waiting work on
        the GPUs it frees."""
        try:
            await handle.close.remote(self.pool_cfg.drain_timeout_s)
        except Exception:
            log.warning("closing the pool of %s failed; killed", endpoint, exc_info=True)
        finally:
            ray.kill(handle, no_restart=True)
            self._closing.pop(endpoint, None)
            if endpoint not in self.pools:  # not re-created meanwhile: whatever replica is left goes too
                for name in kill_orphan_replicas(self.boot.namespace, {*self.pools, *self._closing}):
                    log.warning("killed replica %s: its endpoint no longer exists", name)
            self._wake.set()

    def _standby(self, spec: EndpointSpec | None = None, delay_s: float = 0.0) -> None:
        """Ask for standby worker processes (:mod:`orchestrator.core.standby`) in ``delay_s``, without
        waiting: without ``spec``, one on this (the control) node for the next pool; with it, one on each
        node that can host a replica of ``spec`` (its first one)."""

        async def run() -> int:
            await asyncio.sleep(delay_s)
            nodes = await asyncio.to_thread(warm_workers.nodes)
            if spec is not None:
                picked = replica_standby_nodes(nodes, spec.gpus, bool(spec.runtime_env))
            else:
                own = node_by_id(nodes, ray.get_runtime_context().get_node_id())
                picked = [own] if own is not None else []
            return await warm_workers.prestart_on(picked)

        task = asyncio.get_running_loop().create_task(run())
        self._standby_tasks.add(task)
        task.add_done_callback(self._standby_tasks.discard)

    async def pool_ready(self, endpoint: str, timeout_s: float) -> bool:
        """Wait until the pool of ``endpoint`` (an endpoint with a handler, just created) is created and
        answers, at most ``timeout_s``: the endpoint's create answers once its first job will not wait for
        a pool process to start. Ticks now to create it. False when it is not up in time, when this
        instance is not the leader, or when the endpoint has no pool (no handler, or deleted)."""
        deadline_s = time.monotonic() + timeout_s
        await self.start()
        if self.leased and not self.leader:  # an instance without the lease creates no pools
            return False
        if endpoint not in self.pools:
            created = self._pool_created.setdefault(endpoint, asyncio.Event())
            self._wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(created.wait(), max(0.0, deadline_s - time.monotonic()))
        pool = self.pools.get(endpoint)
        if pool is None:
            return False
        try:
            await asyncio.wait_for(pool.start.remote(), max(0.1, deadline_s - time.monotonic()))
        except Exception:
            return False
        return True

    def _forget(self, endpoint: str) -> None:
        """Drop an endpoint's policy memory with its pool. ``decide`` keeps memory only for the endpoints
        of its snapshot, but a tick may fail before it gets that far, and an endpoint re-created under the
        same name before the next tick must not inherit the old one's expected replicas or cooldowns."""
        if self.state is not None and endpoint in self.state.endpoints:
            kept = {k: v for k, v in self.state.endpoints.items() if k != endpoint}
            self.state = AutoscalerState(kept)

    async def _record(self, decisions: list[Any], now_s: float) -> None:
        """Every decision into its endpoint's history, except a Blocked that repeats the last one."""
        entries: list[tuple[str, dict[str, Any]]] = []
        for d in decisions:
            if isinstance(d, Blocked):
                if self.last_blocked.get(d.endpoint) == d.reason:
                    continue
                self.last_blocked[d.endpoint] = d.reason
            else:
                self.last_blocked.pop(d.endpoint, None)
            entry = {"at": int(now_s * 1000), **decision_to_dict(d)}
            entries.append((d.endpoint, entry))
            log.info("autoscaler %s", entry)
        await self.store.record(entries)

    # API --------------------------------------------------------------------------------------------

    async def set_enabled(self, on: bool) -> dict[str, Any]:
        await self.store.set_switch(on)
        self._wake.set()
        return {"enabled": on}

    async def set_override(self, endpoint: str, override: dict[str, Any] | None) -> dict[str, Any]:
        """Pin an endpoint's replica count or exclude it from autoscaling (None clears)."""
        await self.store.set_override(endpoint, override)
        self._wake.set()
        return {"endpoint": endpoint, "override": override}

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        return await self.store.history(endpoint, limit)

    async def status(self) -> dict[str, Any]:
        """Cluster GPUs and, per endpoint, current/desired replicas, queue, priorities, idle and wait
        times."""
        await self.start()
        if not self.last:
            await self.tick()
        if not self.last:  # not the leader yet (a previous instance's lease has not expired): no snapshot
            total, available = ray_cluster.gpus()
            return {
                "enabled": await self.enabled(),
                "leader": False,
                "ticks": self.ticks,
                "intervalS": self.interval_s,
                "gpus": {"total": total, "used": total - available, "free": available},
                "endpoints": [],
            }
        snap = self.last["snapshot"]
        total, available = self.last["gpus"]
        rows = []
        for v in snap.endpoints:
            mem = self.state.endpoints.get(v.name) if self.state else None
            wait_s = v.oldest_queued_age_s or 0.0
            idle = [snap.now_s - r.idle_since_s for r in v.replicas if r.state == "idle" and r.idle_since_s]
            rows.append(
                {
                    "endpoint": v.name,
                    "current": sum(1 for r in v.replicas if r.state != "draining"),
                    "desired": self.last["summaries"].get(v.name, {}).get("target"),
                    "starting": sum(1 for r in v.replicas if r.state == "starting"),
                    "queued": v.queued,
                    "running": v.running,
                    "priority": v.priority,
                    "effectivePriority": effective_priority(v.priority, v.queued, wait_s, self.config),
                    "idleS": round(min(idle), 1) if idle else None,
                    "waitingS": round(wait_s, 1),
                    "minReplicas": v.min_replicas,
                    "maxReplicas": v.max_replicas,
                    "keepAlive": v.keep_alive,
                    "gpuTypes": list(v.gpu_types) if v.gpu_types else None,
                    "blocked": self.last_blocked.get(v.name),
                    "lastScaleUpAt": getattr(mem, "last_scale_up_s", None),
                }
            )
        return {
            "enabled": await self.enabled(),
            "ticks": self.ticks,
            "intervalS": self.interval_s,
            "gpus": {
                "total": total,
                "used": total - available,
                "free": available,
                "maxGpus": self.settings.max_gpus,
                "byType": {
                    t: {"total": n, "usedElsewhere": snap.gpus_used_elsewhere_by_type.get(t, 0.0)}
                    for t, n in snap.gpus_by_type.items()
                },
            },
            "endpoints": rows,
        }

    async def workers(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for p in self.pools.values():
            out += await p.workers.remote()
        return out


def create_autoscaler(boot: BootConfig) -> Any:
    """Get or create the autoscaler actor without waiting for it (the queue's name must be registered)."""
    options = control_options(boot.namespace, AUTOSCALER_NAME, 1000)
    return ray.remote(Autoscaler).options(**options).remote(boot)


__all__ = ["Autoscaler", "create_autoscaler", "pool_name"]
