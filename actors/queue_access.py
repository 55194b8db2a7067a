"""The queue actor's named API keys and audit log: straight to the store, no dispatch involved.

A mixin of :class:`actors.job_queue.JobQueue` (Ray exposes inherited methods), kept apart so the actor stays a
short shell around the dispatcher.
"""

from __future__ import annotations

from orchestrator.core.scopes import AuditEntry, KeyRecord
from orchestrator.store.access import RedisAccessStore


class AccessMethods:
    """Key and audit calls of the queue actor; the actor sets ``access`` in its constructor."""

    access: RedisAccessStore

    async def create_key(self, record: KeyRecord) -> None:
        await self.access.create_key(record)

    async def revoke_key(self, name: str) -> KeyRecord:
        return await self.access.revoke_key(name)

    async def list_keys(self) -> tuple[list[KeyRecord], dict[str, int]]:
        return await self.access.list_keys()

    async def sync_keys(
        self, known_version: int, used_ms: dict[str, int]
    ) -> tuple[int, list[KeyRecord] | None]:
        return await self.access.sync(known_version, used_ms)

    async def record_audit(self, entry: AuditEntry) -> None:
        await self.access.record_audit(entry)

    async def audit(self, limit: int) -> list[AuditEntry]:
        return await self.access.audit(limit)
