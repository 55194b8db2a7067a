"""The environment ``ripple up`` gives its Ray head so that Serve's proxy reaches replicas over gRPC
(:func:`orchestrator.ops.local.serve_transport_env`)."""

from __future__ import annotations

import pytest

from orchestrator.ops.local import SERVE_GRPC_MAX_MESSAGE_BYTES, serve_transport_env

pytestmark = pytest.mark.timeout(10)


def test_grpc_with_a_message_limit_above_any_stored_reply() -> None:
    assert serve_transport_env({}) == {
        "RAY_SERVE_PROXY_USE_GRPC": "1",
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(SERVE_GRPC_MAX_MESSAGE_BYTES),
    }
    assert SERVE_GRPC_MAX_MESSAGE_BYTES >= 512 * 1024 * 1024, "Redis's largest value fits"


def test_an_operator_can_keep_serves_actor_calls_or_set_the_limit() -> None:
    mine = {"RAY_SERVE_PROXY_USE_GRPC": "0", "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": "1048576"}
    assert serve_transport_env(mine) == mine
