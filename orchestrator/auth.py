"""API and worker keys: generated and stored when not given, compared in constant time, never logged.

Replicas of the HTTP app receive only SHA-256 digests of the keys; a presented key is hashed and compared
with :func:`hmac.compare_digest`. ``<data-dir>/keys.json`` (mode 0600) keeps generated keys across restarts.

Named keys (``ripple keys create``, scopes in :mod:`orchestrator.core.scopes`) are 256-bit random secrets
made by :func:`new_key`; the store keeps only their SHA-256 digest. A plain, fast hash is enough because the
secret has 256 bits of entropy: no dictionary or brute force reaches it, so a slow KDF would only cost every
request time, and a pepper (HMAC with an instance secret) would protect only guessable keys, which we never
make, while adding a secret every replica must share. A presented key is hashed once and looked up by its
digest in each replica's :class:`KeyCache` (a dict: O(1) per request). The instance's own keys
(``RIPPLE_API_KEY`` / ``RIPPLE_WORKER_KEY``), which a person may choose, never reach the store at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.core.errors import ConfigError
from orchestrator.core.scopes import ADMIN_KEY_NAME, WORKER_KEY_NAME, KeyRecord, Principal, Scope

log = logging.getLogger("ripple.auth")

KEYS_FILE = "keys.json"


@dataclass(frozen=True)
class Keys:
    """The instance's keys; ``generated`` is True when this call created them (print them once)."""

    api_key: str | None
    worker_key: str | None
    path: Path | None
    generated: bool


@dataclass(frozen=True)
class AuthConfig:
    """What the HTTP replicas need to check keys; no key in clear text."""

    enabled: bool
    api_digest: str = ""
    worker_digest: str = ""
    session_secret: bytes = b""
    secure_cookie: bool = False

    def api_key_ok(self, presented: str) -> bool:
        return not self.enabled or _match(presented, self.api_digest)

    def worker_key_ok(self, presented: str) -> bool:
        return not self.enabled or _match(presented, self.worker_digest)

    def instance_key(self, presented: str) -> Principal | None:
        """The principal of the instance's own API key (admin) or worker key (worker), else None."""
        if _match(presented, self.api_digest):
            return Principal(ADMIN_KEY_NAME, Scope.ADMIN)
        if _match(presented, self.worker_digest):
            return Principal(WORKER_KEY_NAME, Scope.WORKER)
        return None


def digest(key: str) -> str:
    """SHA-256 hex digest of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _match(presented: str, expected_digest: str) -> bool:
    return bool(expected_digest) and hmac.compare_digest(digest(presented), expected_digest)


def load_or_create_keys(settings: Settings, *, create: bool = True) -> Keys:
    """Keys from settings (``RIPPLE_API_KEY`` / ``RIPPLE_WORKER_KEY``), else from the data dir's keys.json,
    else newly generated and stored there with mode 0600 (when ``create``).

    Raises:
        ConfigError: keys.json exists but cannot be read as JSON.
    """
    api = settings.api_key.get_secret_value() if settings.api_key else None
    worker = settings.worker_key.get_secret_value() if settings.worker_key else None
    path = settings.data_dir / KEYS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
    api = api or stored.get("api_key")
    worker = worker or stored.get("worker_key")
    generated = False
    if create and (api is None or worker is None):
        api = api or "rk_" + secrets.token_urlsafe(32)
        worker = worker or "wk_" + secrets.token_urlsafe(32)
        if stored.get("api_key") != api or stored.get("worker_key") != worker:
            write_keys(path, api, worker)
            generated = True
    return Keys(api, worker, path, generated)


def write_keys(path: Path, api_key: str, worker_key: str) -> None:
    """Write keys.json with mode 0600 (created with that mode, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"api_key": api_key, "worker_key": worker_key}, f)
    os.chmod(path, 0o600)


def auth_config(settings: Settings, keys: Keys) -> AuthConfig:
    """The replicas' view of the keys (digests and a session secret derived from the API key)."""
    if settings.insecure:
        return AuthConfig(enabled=False)
    if not keys.api_key or not keys.worker_key:
        raise ConfigError("auth is on but no API or worker key is set (RIPPLE_API_KEY, RIPPLE_WORKER_KEY)")
    secret = hashlib.sha256(b"ripple-ui-session:" + keys.api_key.encode()).digest()
    return AuthConfig(
        True,
        digest(keys.api_key),
        digest(keys.worker_key),
        secret,
        secure_cookie=settings.host not in ("127.0.0.1", "localhost", "::1"),
    )


# Named keys --------------------------------------------------------------------------------------------

NAMED_KEY_PREFIX = "rpk_"
KEY_CACHE_MAX_AGE_S = 0.5
"""How long a replica trusts its copy of the key table before it asks the store again (one counter read,
the whole table only when the counter moved): a revocation reaches every replica within this plus one
round trip."""

KEY_CACHE_MISS_REFRESH_S = 0.1
"""A key not in the table makes the replica look again when its copy is older than this (a key created a
moment ago works at once), so unknown keys cost at most ten store reads a second per replica."""

SyncKeys = Callable[[int, dict[str, int]], Awaitable[tuple[int, list[KeyRecord] | None]]]
"""``sync(known_version, used_ms) -> (version, records or None when unchanged)``: the queue actor's
``sync_keys``, which also records the last-use times."""


def new_key() -> str:
    """A new named key: 256 random bits, URL-safe, with a recognisable prefix (for secret scanners)."""
    return NAMED_KEY_PREFIX + secrets.token_urlsafe(32)


def named_key_record(
    name: str, scope: Scope, endpoints: tuple[str, ...], created_ms: int
) -> tuple[str, KeyRecord]:
    """A new key and the record to store for it (its digest, never the key)."""
    key = new_key()
    return key, KeyRecord(name, scope, digest(key), created_ms, endpoints)


@dataclass
class KeyCache:
    """One HTTP replica's copy of the named keys, by digest and by name.

    :meth:`refresh` asks the store (through ``sync``) at most once per ``max_age_s``; concurrent requests
    share one call. A failed call raises (the request fails, 503) rather than trusting a table that may miss
    a revocation. Last uses are noted here and reported with the next sync.
    """

    max_age_s: float = KEY_CACHE_MAX_AGE_S
    miss_refresh_s: float = KEY_CACHE_MISS_REFRESH_S
    clock_s: Callable[[], float] = time.monotonic
    version: int = -1
    by_digest: dict[str, KeyRecord] = field(default_factory=dict)
    by_name: dict[str, KeyRecord] = field(default_factory=dict)
    checked_at_s: float = float("-inf")
    _used_ms: dict[str, int] = field(default_factory=dict)
    _lock: asyncio.Lock | None = None

    def invalidate(self) -> None:
        """Look again on the next request (this replica created or revoked a key)."""
        self.checked_at_s = float("-inf")

    async def refresh(self, sync: SyncKeys, max_age_s: float | None = None) -> None:
        """Bring the table up to date unless it was checked within ``max_age_s`` (default: the cache's)."""
        max_age_s = self.max_age_s if max_age_s is None else max_age_s
        if self.clock_s() - self.checked_at_s < max_age_s:
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            started_s = self.clock_s()
            if started_s - self.checked_at_s < max_age_s:
                return  # another request refreshed it while this one waited
            used, self._used_ms = self._used_ms, {}
            try:
                version, records = await sync(self.version, used)
            except BaseException:
                for name, ms in used.items():
                    self._used_ms.setdefault(name, ms)
                raise
            if records is not None:
                self.by_digest = {r.digest: r for r in records}
                self.by_name = {r.name: r for r in records}
            self.version = version
            # Conservative: the table is as new as the moment the call started.
            self.checked_at_s = started_s

    async def principal(self, presented_key: str, sync: SyncKeys, now_ms: int) -> Principal | None:
        """The principal of a named key (None when unknown or revoked); notes the use."""
        await self.refresh(sync)
        hashed = digest(presented_key)
        record = self.by_digest.get(hashed)
        if record is None:
            await self.refresh(sync, self.miss_refresh_s)
            record = self.by_digest.get(hashed)
        if record is None:
            return None
        self._used_ms[record.name] = now_ms
        return record.principal

    async def principal_named(self, name: str, sync: SyncKeys) -> Principal | None:
        """The principal of a named key by its name (a UI session), None when revoked."""
        await self.refresh(sync)
        record = self.by_name.get(name)
        return None if record is None else record.principal
