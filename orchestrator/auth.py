"""API and worker keys: generated and stored when not given, compared in constant time, never logged.

Replicas of the HTTP app receive only SHA-256 digests of the keys; a presented key is hashed and compared
with :func:`hmac.compare_digest`. ``<data-dir>/keys.json`` (mode 0600) keeps generated keys across restarts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Settings
from orchestrator.core.errors import ConfigError

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
