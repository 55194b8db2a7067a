"""``RIPPLE_DIRECT_INGRESS_PORT``: the environment ``ripple up`` gives its Ray head to turn Serve's direct
ingress on (:func:`orchestrator.ops.local.direct_ingress_env`), and the setting's bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from orchestrator.config import Settings
from orchestrator.ops.local import DIRECT_INGRESS_PORTS, direct_ingress_env

pytestmark = pytest.mark.timeout(10)


def test_the_api_replicas_take_ports_from_the_setting_up() -> None:
    env = direct_ingress_env(24_000, {})
    assert env == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "24000",
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(24_000 + DIRECT_INGRESS_PORTS),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    }


def test_what_an_operator_set_is_kept() -> None:
    mine = {
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "30",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "1",
    }
    env = direct_ingress_env(24_000, mine)
    assert {k: env[k] for k in mine} == mine


def test_the_setting_is_off_by_default_and_bounded() -> None:
    assert Settings().direct_ingress_port is None
    assert Settings(direct_ingress_port=30_000).direct_ingress_port == 30_000
    for bad in (80, 65_535):
        with pytest.raises(ValidationError, match="direct_ingress_port"):
            Settings(direct_ingress_port=bad)
