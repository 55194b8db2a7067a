"""``ripple up``'s Ray authentication (:func:`orchestrator.ops.local.configure_ray_auth`): token auth with a
per-data-dir token when Ripple starts its own head, the user's RAY_AUTH_MODE otherwise respected."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.ops.local import RAY_TOKEN_FILE, configure_ray_auth

pytestmark = pytest.mark.timeout(10)


NAMES = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture(autouse=True)
def clean_env() -> Iterator[None]:
    """No Ray auth variables during the test; afterwards the environment and Ray's view of it as before."""
    saved = {n: os.environ.pop(n) for n in NAMES if n in os.environ}
    yield
    for name in NAMES:
        os.environ.pop(name, None)
    os.environ.update(saved)
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def test_own_head_gets_a_private_token(tmp_path: Path) -> None:
    assert configure_ray_auth(tmp_path, own_head=True) == "token"

    token = tmp_path / RAY_TOKEN_FILE
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token.resolve())
    assert token.stat().st_mode & 0o777 == 0o600
    assert len(token.read_text()) == 64


def test_the_token_is_kept_and_found_again_by_ripple_down(tmp_path: Path) -> None:
    configure_ray_auth(tmp_path, own_head=True)
    first = (tmp_path / RAY_TOKEN_FILE).read_text()
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        del os.environ[name]

    assert configure_ray_auth(tmp_path, own_head=False) == "token"  # what `ripple down` does

    assert (tmp_path / RAY_TOKEN_FILE).read_text() == first
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str((tmp_path / RAY_TOKEN_FILE).resolve())


def test_joining_a_cluster_without_a_mode_keeps_no_token(tmp_path: Path) -> None:
    assert configure_ray_auth(tmp_path, own_head=False) == "disabled"
    assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert not (tmp_path / RAY_TOKEN_FILE).exists()


@pytest.mark.parametrize("mode", ["disabled", "token"])
def test_the_users_mode_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", mode)

    assert configure_ray_auth(tmp_path, own_head=True) == mode

    assert not (tmp_path / RAY_TOKEN_FILE).exists() and "RAY_AUTH_TOKEN_PATH" not in os.environ


def test_a_token_in_the_environment_is_used_as_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-user")

    assert configure_ray_auth(tmp_path, own_head=True) == "token"

    assert os.environ["RAY_AUTH_TOKEN"] == "from-the-user" and "RAY_AUTH_TOKEN_PATH" not in os.environ
