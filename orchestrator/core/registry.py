"""The queue's registry of workers, internal (Ray replicas) and outside (RunPod worker SDK) alike.

In-memory, clock passed in, persisted by the queue actor through :meth:`WorkerRegistry.dirty`. A worker
registers on its first take or ping; its state is what it reports (replicas report their lifecycle and
health) or, for outside workers, derived: busy while it holds jobs, idle otherwise, draining once asked,
stopped when its heartbeat is lost. Stopped workers are forgotten after ``retention_s``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PERSIST_EVERY_S = 5.0


@dataclass
class _Entry:
    worker_id: str
    endpoint: str
    kind: str
    first_seen_s: float
    last_seen_s: float
    jobs: set[str] = field(default_factory=set)
    draining: bool = False
    lost_at_s: float | None = None
    reported: dict[str, Any] = field(default_factory=dict)
    persisted_s: float = 0.0

    def state(self) -> str:
        if self.lost_at_s is not None:
            return "stopped"
        reported = self.reported.get("state")
        if isinstance(reported, str):
            return reported
        if self.draining:
            return "draining"
        return "busy" if self.jobs else "idle"

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "workerId": self.worker_id,
            "endpoint": self.endpoint,
            "kind": self.kind,
            "state": self.state(),
            "health": "healthy",
            "jobs": sorted(self.jobs),
            "firstSeenAt": int(self.first_seen_s * 1000),
            "lastHeartbeatAt": int(self.last_seen_s * 1000),
            "draining": self.draining,
            "reason": "heartbeat lost" if self.lost_at_s is not None else None,
        }
        out.update({k: v for k, v in self.reported.items() if k not in ("jobs", "workerId", "endpoint")})
        if self.lost_at_s is not None:
            out["state"] = "stopped"
        return out


class WorkerRegistry:
    """Workers by id. Not thread-safe; one event loop owns it."""

    def __init__(self, heartbeat_timeout_s: float, retention_s: float = 600.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.retention_s = retention_s
        self._w: dict[str, _Entry] = {}
        self._removed: set[str] = set()
        self._dirty: set[str] = set()

    def touch(
        self,
        worker_id: str,
        endpoint: str,
        kind: str | None,
        now_s: float,
        reported: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a sign of life (a take, a result or a ping), registering the worker if new."""
        e = self._w.get(worker_id)
        if e is None or e.endpoint != endpoint:
            e = _Entry(worker_id, endpoint, kind or "external", now_s, now_s)
            self._w[worker_id] = e
            self._removed.discard(worker_id)
            self._dirty.add(worker_id)
        e.last_seen_s = now_s
        if e.lost_at_s is not None:
            e.lost_at_s = None
            self._dirty.add(worker_id)
        if kind is not None and e.kind != kind:
            e.kind = kind
        if reported is not None and reported != e.reported:
            e.reported = dict(reported)
            self._dirty.add(worker_id)

    def hold(self, worker_id: str, endpoint: str, job_id: str, now_s: float) -> None:
        if worker_id not in self._w:
            self.touch(worker_id, endpoint, None, now_s)
        self._w[worker_id].jobs.add(job_id)
        self._dirty.add(worker_id)

    def release(self, worker_id: str, job_id: str) -> None:
        e = self._w.get(worker_id)
        if e is not None and job_id in e.jobs:
            e.jobs.discard(job_id)
            self._dirty.add(worker_id)

    def held(self, worker_id: str) -> list[str]:
        e = self._w.get(worker_id)
        return sorted(e.jobs) if e else []

    def exists(self, worker_id: str) -> bool:
        return worker_id in self._w

    def endpoint_of(self, worker_id: str) -> str:
        return self._w[worker_id].endpoint

    def drain(self, worker_id: str, now_s: float) -> None:
        self._w[worker_id].draining = True
        self._dirty.add(worker_id)

    def is_draining(self, worker_id: str) -> bool:
        e = self._w.get(worker_id)
        return bool(e and e.draining)

    def stale(self, now_s: float) -> list[str]:
        """Live workers whose last sign of life is older than the heartbeat timeout."""
        return [
            w
            for w, e in self._w.items()
            if e.lost_at_s is None and now_s - e.last_seen_s > self.heartbeat_timeout_s
        ]

    def mark_lost(self, worker_id: str, now_s: float) -> None:
        e = self._w.get(worker_id)
        if e is not None:
            e.lost_at_s = now_s
            e.jobs.clear()
            self._dirty.add(worker_id)

    def restore(self, raw: Mapping[str, str], draining: set[str], now_s: float) -> None:
        """Reload persisted records after a restart; every worker gets one heartbeat timeout of grace."""
        for worker_id, text in raw.items():
            d = json.loads(text)
            e = _Entry(
                worker_id,
                d["endpoint"],
                d.get("kind", "external"),
                d.get("firstSeenAt", 0) / 1000,
                now_s,
                draining=worker_id in draining,
                reported=d.get("reported", {}),
                persisted_s=now_s,
            )
            if d.get("lostAt"):
                e.lost_at_s = d["lostAt"] / 1000
            self._w[worker_id] = e

    def dirty(self, now_s: float) -> tuple[dict[str, str], list[str]]:
        """Records to persist (changed, or last heartbeat unsaved for a while) and ids to delete."""
        for w, e in list(self._w.items()):
            if e.lost_at_s is not None and now_s - e.lost_at_s > self.retention_s:
                del self._w[w]
                self._removed.add(w)
            elif now_s - e.persisted_s > PERSIST_EVERY_S and e.last_seen_s > e.persisted_s:
                self._dirty.add(w)
        changed = {}
        for w in self._dirty:
            entry = self._w.get(w)
            if entry is None:
                continue
            e = entry
            e.persisted_s = now_s
            changed[w] = json.dumps(
                {
                    "endpoint": e.endpoint,
                    "kind": e.kind,
                    "firstSeenAt": int(e.first_seen_s * 1000),
                    "lastSeenAt": int(e.last_seen_s * 1000),
                    "reported": e.reported,
                    "lostAt": int(e.lost_at_s * 1000) if e.lost_at_s is not None else None,
                }
            )
        removed = sorted(self._removed)
        self._dirty.clear()
        self._removed.clear()
        return changed, removed

    def view(self, worker_id: str) -> dict[str, Any]:
        return self._w[worker_id].view()

    def views(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return [e.view() for w, e in sorted(self._w.items()) if endpoint is None or e.endpoint == endpoint]

    def health_counts(self, endpoint: str) -> dict[str, int]:
        """RunPod-style worker counts: idle, running, initializing, draining, unhealthy."""
        out = {"idle": 0, "running": 0, "initializing": 0, "draining": 0, "unhealthy": 0}
        for e in self._w.values():
            if e.endpoint != endpoint:
                continue
            state, health = e.state(), e.reported.get("health", "healthy")
            if state == "stopped":
                continue
            if health in ("quarantined", "evicted"):
                out["unhealthy"] += 1
            elif state == "idle":
                out["idle"] += 1
            elif state == "busy":
                out["running"] += 1
            elif state == "starting":
                out["initializing"] += 1
            elif state == "draining":
                out["draining"] += 1
        return out

    def state_counts(self) -> dict[tuple[str, str], float]:
        out: dict[tuple[str, str], float] = {}
        for e in self._w.values():
            key = (e.endpoint, e.state())
            out[key] = out.get(key, 0) + 1
        return out
