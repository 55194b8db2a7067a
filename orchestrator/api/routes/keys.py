"""Named API keys under ``/api/v1/keys`` (admin keys only) and the audit log at ``/api/v1/audit`` (admin and
read keys).

A key is shown once, in the reply that creates it; the store keeps its SHA-256 digest only. Creating and
revoking are recorded in the audit log by the routers' access dependency, like every management change.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from orchestrator.api import schemas as s
from orchestrator.api.deps import Queue, State, require_audit_reader, require_keys_admin, utf8_body
from orchestrator.auth import named_key_record
from orchestrator.core.scopes import KeyRecord, Scope, check_new_key

router = APIRouter(
    prefix="/api/v1/keys", tags=["management"], dependencies=[Depends(require_keys_admin), Depends(utf8_body)]
)
audit_router = APIRouter(prefix="/api/v1", tags=["management"], dependencies=[Depends(require_audit_reader)])


def _view(record: KeyRecord, last_used_ms: int | None) -> s.KeyView:
    return s.KeyView(
        name=record.name,
        scope=record.scope.value,
        endpoints=list(record.endpoints),
        createdAt=record.created_ms,
        lastUsedAt=last_used_ms,
    )


@router.post("", status_code=201, response_model=s.KeyCreated)
async def create_key(body: s.KeyCreate, queue: Queue, state: State) -> s.KeyCreated:
    """Create a named key; the reply carries the key, shown this once (409 when the name is taken)."""
    scope = Scope(body.scope)
    endpoints = check_new_key(body.name, scope, body.endpoints)
    key, record = named_key_record(body.name, scope, endpoints, int(time.time() * 1000))
    await queue.create_key(record)
    state.keys.invalidate()  # usable here at once; other replicas look again on a miss
    return s.KeyCreated(key=key, **_view(record, None).model_dump())


@router.get("", response_model=s.KeyList)
async def list_keys(queue: Queue) -> s.KeyList:
    """Every named key: name, scope, endpoints, created and last used; never the key."""
    records, used = await queue.list_keys()
    return s.KeyList(keys=[_view(r, used.get(r.name)) for r in records])


@router.delete("/{name}", response_model=s.KeyRevoked)
async def revoke_key(name: Annotated[str, Path(max_length=63)], queue: Queue, state: State) -> s.KeyRevoked:
    """Revoke a named key (404 when there is none); every replica refuses it within about a second."""
    record = await queue.revoke_key(name)
    state.keys.invalidate()  # refused here at once; other replicas within KEY_CACHE_MAX_AGE_S
    return s.KeyRevoked(name=record.name, revoked=True)


@audit_router.get("/audit", response_model=s.AuditLog)
async def audit(queue: Queue, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> s.AuditLog:
    """Management changes, newest first: key name, action, target, time (ms) and request id."""
    rows = await queue.audit(limit)
    return s.AuditLog(entries=[s.AuditRow.model_validate(r.doc()) for r in rows])
