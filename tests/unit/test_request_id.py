"""X-Request-ID round trip through the HTTP app, log lines carrying it, and /api/v1/info without secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from orchestrator import logs
from orchestrator.api.app import create_app
from orchestrator.api.deps import AppState
from orchestrator.api.middleware import RequestIdMiddleware, current_request_id
from orchestrator.auth import AuthConfig
from orchestrator.boot import boot_config
from orchestrator.config import load_settings

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    settings = load_settings(data_dir=tmp_path, insecure=True)
    boot = boot_config(
        settings, "redis://:hunter2@example:6379/0", False, AuthConfig(enabled=False), "http://127.0.0.1:8265"
    )
    yield TestClient(create_app(AppState(boot=boot)))


def test_request_id_is_echoed(app_client: TestClient) -> None:
    r = app_client.get("/health/live", headers={"X-Request-ID": "client-abc.1"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "client-abc.1"


def test_request_id_is_generated_when_absent_or_malformed(app_client: TestClient) -> None:
    a = app_client.get("/health/live").headers["x-request-id"]
    b = app_client.get("/health/live", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert len(a) == 32 and len(b) == 32 and a != b


def test_error_replies_carry_it_too(app_client: TestClient) -> None:
    r = app_client.get("/no/such/route", headers={"X-Request-ID": "r-404"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "r-404"


def test_info_reports_the_instance_without_secrets(app_client: TestClient) -> None:
    r = app_client.get("/api/v1/info")
    assert r.status_code == 200
    body = r.json()
    assert body["store"] == "external" and body["auth"] is False
    assert body["dashboardUrl"] == "http://127.0.0.1:8265"
    assert body["namespace"] == "ripple" and body["version"]
    assert "hunter2" not in r.text and "redis://" not in r.text


def test_log_lines_inside_a_request_carry_its_id() -> None:
    out = io.StringIO()
    logs.configure("INFO", logger="ripple.test_http", stream=out, json_lines=True)
    api = FastAPI()
    api.add_middleware(RequestIdMiddleware)
    seen: list[str | None] = []

    @api.get("/x")
    async def x() -> dict[str, str]:
        seen.append(current_request_id())
        logging.getLogger("ripple.test_http").info("handled")
        return {"ok": "yes"}

    r = TestClient(api).get("/x", headers={"X-Request-ID": "trace-7"})
    assert r.headers["x-request-id"] == "trace-7"
    assert seen == ["trace-7"]
    line = json.loads(out.getvalue().strip())
    assert line["request_id"] == "trace-7" and line["msg"] == "handled"


def test_behind_serve_the_proxy_echoes_and_this_only_reads() -> None:
    api = FastAPI()
    api.add_middleware(RequestIdMiddleware, echo=lambda: False)
    seen: list[str | None] = []

    @api.get("/x")
    async def x() -> dict[str, str]:
        seen.append(current_request_id())
        return {}

    r = TestClient(api).get("/x", headers={"X-Request-ID": "from-proxy"})
    assert "x-request-id" not in r.headers
    assert seen == ["from-proxy"]
