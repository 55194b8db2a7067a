"""Named API keys and their scopes: who may use which route family, of which endpoints; the audit trail's
shape. Pure: no clock (times come in), no HTTP framework.

A key has one :class:`Scope`:

| scope | may use |
| --- | --- |
| ``admin`` | everything |
| ``read`` | management GETs (``/api/v1``), the audit log, the web UI without changes |
| ``client`` | the ``/v2/{endpoint}`` client routes (OpenAI-compatible ones too), of all or listed endpoints |
| ``worker`` | the worker protocol of every endpoint or of the listed ones |

The instance's own keys keep working: ``RIPPLE_API_KEY`` is an ``admin`` key named ``RIPPLE_API_KEY``,
``RIPPLE_WORKER_KEY`` a ``worker`` key named ``RIPPLE_WORKER_KEY`` (upper case, so no created key, whose
name is lower case, can take those names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from orchestrator.core.errors import InvalidInput

ADMIN_KEY_NAME = "RIPPLE_API_KEY"
WORKER_KEY_NAME = "RIPPLE_WORKER_KEY"
INSECURE_NAME = "insecure"
"""The principal of every request when auth is off (``--insecure``): an admin."""

KEY_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_KEY_NAME = re.compile(KEY_NAME_PATTERN)
MAX_KEY_ENDPOINTS = 100
AUDIT_LIMIT = 10_000
"""Audit entries kept (newest first); older ones are dropped."""


class Scope(StrEnum):
    ADMIN = "admin"
    READ = "read"
    CLIENT = "client"
    WORKER = "worker"


class Family(StrEnum):
    """A group of routes that one scope decision covers."""

    CLIENT = "client"  # /v2/{endpoint} client routes (run, status, stream, cancel, purge, openai, ...)
    WORKER = "worker"  # /v2/{endpoint} worker protocol (job-take, job-done, ping, ...)
    READ = "read"  # management GETs under /api/v1
    CHANGE = "change"  # management changes under /api/v1 (POST, PUT, PATCH, DELETE)
    KEYS = "keys"  # /api/v1/keys, admin only, GETs included
    AUDIT = "audit"  # /api/v1/audit
    UI = "ui"  # logging in to the web UI


ALLOWED: Mapping[Scope, frozenset[Family]] = {
    Scope.ADMIN: frozenset(Family),
    Scope.READ: frozenset({Family.READ, Family.AUDIT, Family.UI}),
    Scope.CLIENT: frozenset({Family.CLIENT}),
    Scope.WORKER: frozenset({Family.WORKER}),
}
"""The route families each scope may use."""

_WHAT: Mapping[Family, str] = {
    Family.CLIENT: "use the client API",
    Family.WORKER: "use the worker protocol",
    Family.READ: "read the management API",
    Family.CHANGE: "change anything (management changes need an admin key)",
    Family.KEYS: "manage keys (admin only)",
    Family.AUDIT: "read the audit log",
    Family.UI: "log in to the web UI (admin and read keys only)",
}

ENDPOINT_FAMILIES = frozenset({Family.CLIENT, Family.WORKER})
"""Families whose routes name one endpoint, so an endpoint-restricted key is checked against it."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: a key's name, its scope and, for client and worker keys, the endpoints it is
    limited to (empty: every endpoint)."""

    name: str
    scope: Scope
    endpoints: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyRecord:
    """A named key as stored: never the key, only its SHA-256 digest (hex)."""

    name: str
    scope: Scope
    digest: str
    created_ms: int
    endpoints: tuple[str, ...] = ()

    @property
    def principal(self) -> Principal:
        return Principal(self.name, self.scope, self.endpoints)

    def doc(self) -> dict[str, Any]:
        """The stored JSON document (the digest included: it stays in the store and the replicas)."""
        return {
            "name": self.name,
            "scope": self.scope.value,
            "digest": self.digest,
            "createdMs": self.created_ms,
            "endpoints": list(self.endpoints),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> KeyRecord:
        return KeyRecord(
            name=str(doc["name"]),
            scope=Scope(doc["scope"]),
            digest=str(doc["digest"]),
            created_ms=int(doc["createdMs"]),
            endpoints=tuple(str(e) for e in doc.get("endpoints") or ()),
        )


READABLE_CLIENT_ROUTES = frozenset({("GET", "/v2/{endpoint}/health")})
"""Client routes that only read (no cursor moves, nothing queued), which read keys may use too: the web UI
shows an endpoint's health."""


def refusal(
    who: Principal, family: Family, endpoint: str | None = None, *, readable: bool = False
) -> str | None:
    """Why ``who`` may not use a route of ``family`` (on ``endpoint``, for client and worker routes), or None
    when it may. ``readable``: the route is one of :data:`READABLE_CLIENT_ROUTES`. The message names the key
    and its scope, never the key itself."""
    head = f"key '{who.name}' (scope {who.scope.value})"
    if readable and family is Family.CLIENT and who.scope is Scope.READ:
        return None
    if family not in ALLOWED[who.scope]:
        return f"{head} may not {_WHAT[family]}"
    if family in ENDPOINT_FAMILIES and who.endpoints and endpoint not in who.endpoints:
        return f"{head} may not use endpoint '{endpoint}' (only {', '.join(who.endpoints)})"
    return None


def check_new_key(name: str, scope: Scope, endpoints: Iterable[str]) -> tuple[str, ...]:
    """Validate a key to create; the endpoints, de-duplicated in order.

    Raises:
        InvalidInput: a bad name, or endpoints given for a scope that does not take them (admin, read).
    """
    if not _KEY_NAME.match(name):
        raise InvalidInput(
            "key name must be 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter "
            "or digit",
            {"loc": ["body", "name"], "value": name[:64]},
        )
    listed = tuple(dict.fromkeys(endpoints))
    if listed and scope not in (Scope.CLIENT, Scope.WORKER):
        raise InvalidInput(
            f"endpoints limit client and worker keys only, not a {scope.value} key",
            {"loc": ["body", "endpoints"]},
        )
    if len(listed) > MAX_KEY_ENDPOINTS:
        raise InvalidInput(f"at most {MAX_KEY_ENDPOINTS} endpoints", {"loc": ["body", "endpoints"]})
    return listed


@dataclass(frozen=True)
class AuditEntry:
    """One management change: who (key name), what (action), on what (target), when (ms), which request."""

    at_ms: int
    key: str
    action: str
    target: str = ""
    request_id: str = ""
    detail: Mapping[str, Any] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {
            "at": self.at_ms,
            "key": self.key,
            "action": self.action,
            "target": self.target,
            "requestId": self.request_id,
            "detail": dict(self.detail),
        }

    @staticmethod
    def from_doc(doc: Mapping[str, Any]) -> AuditEntry:
        return AuditEntry(
            at_ms=int(doc["at"]),
            key=str(doc["key"]),
            action=str(doc["action"]),
            target=str(doc.get("target") or ""),
            request_id=str(doc.get("requestId") or ""),
            detail=dict(doc.get("detail") or {}),
        )


AUDIT_ACTIONS: Mapping[tuple[str, str], str] = {
    ("POST", "/api/v1/endpoints"): "endpoint.create",
    ("PATCH", "/api/v1/endpoints/{name}"): "endpoint.update",
    ("DELETE", "/api/v1/endpoints/{name}"): "endpoint.delete",
    ("POST", "/api/v1/workers/{worker_id}/drain"): "worker.drain",
    ("POST", "/api/v1/autoscaler/enable"): "autoscaler.enable",
    ("POST", "/api/v1/autoscaler/disable"): "autoscaler.disable",
    ("PUT", "/api/v1/autoscaler/overrides/{endpoint}"): "autoscaler.override.set",
    ("DELETE", "/api/v1/autoscaler/overrides/{endpoint}"): "autoscaler.override.clear",
    ("POST", "/api/v1/keys"): "key.create",
    ("DELETE", "/api/v1/keys/{name}"): "key.revoke",
    ("POST", "/v2/{endpoint}/purge-queue"): "queue.purge",
    ("POST", "/api/v1/endpoints/{name}/rollback"): "endpoint.rollback",
    ("POST", "/api/v1/packages"): "package.upload",
}
"""Named actions of the routes that change something; any other management change is recorded as
``"METHOD /path/template"`` (a route added later is audited without being listed here)."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def audit_action(method: str, path_template: str, family: Family) -> str | None:
    """The action to record for a successful request, or None when it changes nothing worth recording
    (reads; the client and worker routes other than purging a queue)."""
    method = method.upper()
    named = AUDIT_ACTIONS.get((method, path_template))
    if named is not None:
        return named
    if family in (Family.CHANGE, Family.KEYS) and method not in SAFE_METHODS:
        return f"{method} {path_template}"
    return None
