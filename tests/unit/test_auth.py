"""Keys: generated once and stored with mode 0600, reused, overridden by settings, compared by digest."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from orchestrator.auth import KEYS_FILE, auth_config, digest, load_or_create_keys, write_keys
from orchestrator.config import Settings, load_settings
from orchestrator.core.errors import ConfigError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("RIPPLE_", "_RIPPLE_")):
            monkeypatch.delenv(name)


def settings(tmp_path: Path, **kw: Any) -> Settings:
    return load_settings(data_dir=tmp_path / "data", **kw)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generates_and_stores_keys_with_mode_0600(tmp_path: Path) -> None:
    keys = load_or_create_keys(settings(tmp_path))
    assert keys.generated
    assert keys.api_key and keys.api_key.startswith("rk_") and len(keys.api_key) > 40
    assert keys.worker_key and keys.worker_key.startswith("wk_") and keys.worker_key != keys.api_key
    assert keys.path == tmp_path / "data" / KEYS_FILE
    assert mode(keys.path) == 0o600
    assert json.loads(keys.path.read_text()) == {"api_key": keys.api_key, "worker_key": keys.worker_key}


def test_reuses_stored_keys(tmp_path: Path) -> None:
    first = load_or_create_keys(settings(tmp_path))
    second = load_or_create_keys(settings(tmp_path))
    assert (second.api_key, second.worker_key, second.generated) == (first.api_key, first.worker_key, False)


def test_settings_override_stored_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stored = load_or_create_keys(settings(tmp_path))
    monkeypatch.setenv("RIPPLE_API_KEY", "env-api")
    keys = load_or_create_keys(settings(tmp_path))
    assert (keys.api_key, keys.worker_key, keys.generated) == ("env-api", stored.worker_key, False)
    both = load_or_create_keys(settings(tmp_path, worker_key="flag-worker"))
    assert (both.api_key, both.worker_key) == ("env-api", "flag-worker")
    assert json.loads(stored.path.read_text())["api_key"] == stored.api_key, "env keys are not written"  # type: ignore[union-attr]


def test_given_keys_need_no_file(tmp_path: Path) -> None:
    keys = load_or_create_keys(settings(tmp_path, api_key="a", worker_key="w"))
    assert (keys.api_key, keys.worker_key, keys.generated) == ("a", "w", False)
    assert not (tmp_path / "data" / KEYS_FILE).exists()


def test_no_create(tmp_path: Path) -> None:
    keys = load_or_create_keys(settings(tmp_path), create=False)
    assert (keys.api_key, keys.worker_key, keys.generated) == (None, None, False)
    assert not (tmp_path / "data" / KEYS_FILE).exists()


def test_unreadable_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / KEYS_FILE
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        load_or_create_keys(settings(tmp_path))


def test_write_keys_tightens_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k" / KEYS_FILE
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)
    write_keys(path, "a", "w")
    assert mode(path) == 0o600
    assert json.loads(path.read_text()) == {"api_key": "a", "worker_key": "w"}


def test_auth_config_compares_digests(tmp_path: Path) -> None:
    s = settings(tmp_path, api_key="rk_1", worker_key="wk_1")
    cfg = auth_config(s, load_or_create_keys(s))
    assert cfg.enabled and cfg.api_digest == digest("rk_1") and "rk_1" not in repr(cfg)
    assert cfg.api_key_ok("rk_1") and not cfg.api_key_ok("rk_2") and not cfg.api_key_ok("")
    assert cfg.worker_key_ok("wk_1") and not cfg.worker_key_ok("rk_1"), "keys are not interchangeable"
    assert not cfg.api_key_ok("wk_1")
    assert len(cfg.session_secret) == 32 and not cfg.secure_cookie, "loopback host: plain cookies"
    other = auth_config(settings(tmp_path, api_key="rk_other", worker_key="wk_1"), load_or_create_keys(s))
    assert other.session_secret == cfg.session_secret, "the secret follows the key, not the call"
    public = settings(tmp_path, api_key="rk_1", worker_key="wk_1", host="0.0.0.0")
    assert auth_config(public, load_or_create_keys(public)).secure_cookie


def test_digest_is_sha256_hex() -> None:
    assert digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_insecure_accepts_anything(tmp_path: Path) -> None:
    s = settings(tmp_path, insecure=True)
    cfg = auth_config(s, load_or_create_keys(s, create=False))
    assert not cfg.enabled and cfg.api_key_ok("") and cfg.worker_key_ok("anything")


def test_auth_on_without_keys_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path)
    with pytest.raises(ConfigError, match="no API or worker key"):
        auth_config(s, load_or_create_keys(s, create=False))
