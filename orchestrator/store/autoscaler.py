"""What the autoscaler keeps in the store: its policy memory, decision history, leadership lease, the
operator's switch and per-endpoint overrides.

:class:`AutoscalerStore` is the interface the autoscaler actor uses; :class:`RedisAutoscalerStore` implements
it on Redis (the keys of :class:`orchestrator.store.keys.Keys`, the lease as one compare-and-set script) and
:class:`MemoryAutoscalerStore` in memory for tests. The actor never talks to Redis itself.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import redis.asyncio as aioredis

from orchestrator.core.autoscale import Override
from orchestrator.store import scripts as lua
from orchestrator.store.keys import Keys
from orchestrator.store.redis import RETRY_WHILE_RESTARTING_S, retrying_client

HISTORY_LIMIT = 500
"""Decisions kept per endpoint (newest first)."""


def override_from_doc(doc: Mapping[str, Any]) -> Override:
    """An operator override as stored (``{"desiredReplicas": n | null, "disabled": bool}``)."""
    return Override(desired_replicas=doc.get("desiredReplicas"), disabled=bool(doc.get("disabled", False)))


class AutoscalerStore(Protocol):
    """The autoscaler's state in the store. Every method is one atomic step in the store."""

    async def hold_lease(self, holder: str, ttl_ms: int) -> bool:
        """Take the leadership lease when nobody holds it, or renew it (for ``ttl_ms`` from now) when
        ``holder`` does; a compare-and-set. True when ``holder`` holds the lease afterwards."""
        ...

    async def switch(self) -> bool | None:
        """The operator's on/off switch, or None when it was never set (the setting decides)."""
        ...

    async def set_switch(self, on: bool) -> None: ...

    async def load_state(self) -> dict[str, Any] | None:
        """The policy memory saved last (plain JSON), or None."""
        ...

    async def save_state(self, state: Mapping[str, Any]) -> None: ...

    async def overrides(self) -> dict[str, Override]:
        """Every endpoint's operator override, by endpoint name."""
        ...

    async def set_override(self, endpoint: str, doc: Mapping[str, Any] | None) -> None:
        """Store an override document (see :func:`override_from_doc`); None clears it."""
        ...

    async def record(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Append ``(endpoint, entry)`` decisions to their endpoints' histories (the last
        :data:`HISTORY_LIMIT` are kept)."""
        ...

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        """An endpoint's last ``limit`` decisions, newest first."""
        ...

    async def close(self) -> None: ...


class RedisAutoscalerStore:
    """:class:`AutoscalerStore` on Redis (decoded responses). Create with :meth:`connect`."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self._r = client
        self.k = keys
        self._lease = client.register_script(lua.AUTOSCALER_LEASE)

    @classmethod
    def connect(
        cls, url: str, prefix: str = "ripple:", retry_s: float = RETRY_WHILE_RESTARTING_S
    ) -> RedisAutoscalerStore:
        """A store on the Redis at ``url`` (``redis://``, ``rediss://`` or ``unix://``); a command is tried
        again for about ``retry_s`` while Redis does not answer, as the job store's are."""
        return cls(retrying_client(url, retry_s), Keys(prefix))

    async def close(self) -> None:
        await self._r.aclose()

    async def hold_lease(self, holder: str, ttl_ms: int) -> bool:
        return int(await self._lease(args=[self.k.prefix, holder, int(ttl_ms)])) == 1

    async def switch(self) -> bool | None:
        raw = await self._r.get(self.k.autoscaler_enabled)
        return None if raw is None else raw == "1"

    async def set_switch(self, on: bool) -> None:
        await self._r.set(self.k.autoscaler_enabled, "1" if on else "0")

    async def load_state(self) -> dict[str, Any] | None:
        raw = await self._r.get(self.k.autoscaler_state)
        return dict(json.loads(raw)) if raw else None

    async def save_state(self, state: Mapping[str, Any]) -> None:
        await self._r.set(self.k.autoscaler_state, json.dumps(state))

    async def overrides(self) -> dict[str, Override]:
        raw = await self._r.hgetall(self.k.autoscaler_overrides)
        return {name: override_from_doc(json.loads(text)) for name, text in raw.items()}

    async def set_override(self, endpoint: str, doc: Mapping[str, Any] | None) -> None:
        if doc is None:
            await self._r.hdel(self.k.autoscaler_overrides, endpoint)
        else:
            await self._r.hset(self.k.autoscaler_overrides, endpoint, json.dumps(doc))

    async def record(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        if not entries:
            return
        async with self._r.pipeline(transaction=False) as p:
            for endpoint, entry in entries:
                key = self.k.autoscaler_history(endpoint)
                p.lpush(key, json.dumps(entry))
                p.ltrim(key, 0, HISTORY_LIMIT - 1)
            await p.execute()

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        rows = await self._r.lrange(self.k.autoscaler_history(endpoint), 0, limit - 1)
        return [json.loads(r) for r in rows]


class MemoryAutoscalerStore:
    """:class:`AutoscalerStore` in memory; the lease expires on ``clock_ms`` (monotonic by default)."""

    def __init__(self, clock_ms: Callable[[], float] = lambda: time.monotonic() * 1000) -> None:
        self._clock_ms = clock_ms
        self.lease: tuple[str, float] | None = None
        self.enabled: bool | None = None
        self.state: str | None = None
        self.override_docs: dict[str, str] = {}
        self.histories: dict[str, list[str]] = defaultdict(list)

    async def close(self) -> None:
        return None

    async def hold_lease(self, holder: str, ttl_ms: int) -> bool:
        now = self._clock_ms()
        if self.lease is not None and self.lease[1] > now and self.lease[0] != holder:
            return False
        self.lease = (holder, now + ttl_ms)
        return True

    async def switch(self) -> bool | None:
        return self.enabled

    async def set_switch(self, on: bool) -> None:
        self.enabled = on

    async def load_state(self) -> dict[str, Any] | None:
        return dict(json.loads(self.state)) if self.state else None

    async def save_state(self, state: Mapping[str, Any]) -> None:
        self.state = json.dumps(state)

    async def overrides(self) -> dict[str, Override]:
        return {name: override_from_doc(json.loads(text)) for name, text in self.override_docs.items()}

    async def set_override(self, endpoint: str, doc: Mapping[str, Any] | None) -> None:
        if doc is None:
            self.override_docs.pop(endpoint, None)
        else:
            self.override_docs[endpoint] = json.dumps(doc)

    async def record(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        for endpoint, entry in entries:
            rows = self.histories[endpoint]
            rows.insert(0, json.dumps(entry))
            del rows[HISTORY_LIMIT:]

    async def history(self, endpoint: str, limit: int) -> list[dict[str, Any]]:
        return [json.loads(r) for r in self.histories.get(endpoint, [])[: max(0, limit)]]
