"""Named API keys on the FastAPI app with the fake actor clients: every scope allowed and refused on every
route family, endpoint-limited keys, 401 vs 403, Bearer and raw keys, revocation within a second, hashes
at rest, the audit log, and the web UI with a read key."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fakes import API_KEY, WORKER_KEY, Harness, boot, harness
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from orchestrator.api.deps import require_api_key, require_client_key, unrecorded_changes
from orchestrator.api.routes import ROUTERS
from orchestrator.api.webui import CSRF_HEADER
from orchestrator.core.models import EndpointSpec

SECRET = b"s" * 32


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    resolved = boot(str(tmp_path))
    made = harness(replace(resolved, auth=replace(resolved.auth, session_secret=SECRET)))
    for name in ("echo", "other"):
        made.queue.endpoints[name] = EndpointSpec(name=name)
    return made


def create_key(h: Harness, name: str, scope: str, endpoints: list[str] | None = None) -> str:
    r = h.api.post("/api/v1/keys", json={"name": name, "scope": scope, "endpoints": endpoints or []})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == name and body["scope"] == scope and body["key"]
    return str(body["key"])


def as_key(h: Harness, key: str, bearer: bool = True) -> TestClient:
    value = f"Bearer {key}" if bearer else key
    return TestClient(h.app, headers={"Authorization": value}, raise_server_exceptions=False)


# One representative request per route family; each returns a response.
Request = Callable[[TestClient], httpx.Response]
FAMILIES: dict[str, Request] = {
    "client": lambda c: c.post("/v2/echo/run", json={"input": 1}),
    "client-read": lambda c: c.get("/v2/echo/health"),
    "worker": lambda c: c.get("/v2/echo/ping/w1"),
    "worker-take": lambda c: c.get("/v2/echo/job-take/w1"),
    "management-get": lambda c: c.get("/api/v1/endpoints"),
    "management-jobs": lambda c: c.get("/api/v1/jobs"),
    "management-change": lambda c: c.patch("/api/v1/endpoints/echo", json={"priority": 3}),
    "autoscaler-change": lambda c: c.post("/api/v1/autoscaler/disable"),
    "keys-list": lambda c: c.get("/api/v1/keys"),
    "keys-create": lambda c: c.post("/api/v1/keys", json={"name": "made", "scope": "read"}),
    "audit": lambda c: c.get("/api/v1/audit"),
}
ALLOWED: dict[str, set[str]] = {
    "admin": set(FAMILIES),
    "read": {"management-get", "management-jobs", "audit", "client-read"},  # the endpoint's health
    "client": {"client", "client-read"},
    "worker": {"worker", "worker-take"},
}


@pytest.mark.parametrize("scope", list(ALLOWED))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_scope_on_each_route_family(h: Harness, scope: str, family: str) -> None:
    key = create_key(h, f"k-{scope}", scope)
    r = FAMILIES[family](as_key(h, key))
    if family in ALLOWED[scope]:
        assert r.status_code < 300, (scope, family, r.text)
    else:
        assert r.status_code == 403, (scope, family, r.text)
        body = r.json()
        assert body["error"].startswith(f"key 'k-{scope}' (scope {scope}) may not")
        assert body["detail"] == {"key": f"k-{scope}", "scope": scope}
        assert key not in r.text


def test_instance_keys_are_an_admin_and_a_worker_key(h: Harness) -> None:
    for family, request in FAMILIES.items():
        assert request(h.api).status_code < 300, family  # RIPPLE_API_KEY: admin
        if family.startswith("keys-create"):
            h.api.delete("/api/v1/keys/made")
    for family, request in FAMILIES.items():
        r = request(h.worker)  # RIPPLE_WORKER_KEY: the worker protocol only
        if family in ALLOWED["worker"]:
            assert r.status_code < 300, (family, r.text)
        else:
            assert r.status_code == 403, (family, r.text)
            assert "key 'RIPPLE_WORKER_KEY' (scope worker)" in r.json()["error"]


@pytest.mark.parametrize("scope,path", [("client", "/v2/{}/run"), ("worker", "/v2/{}/ping/w1")])
def test_endpoint_limited_keys(h: Harness, scope: str, path: str) -> None:
    key = create_key(h, "limited", scope, ["echo"])
    c = as_key(h, key)

    def call(ep: str) -> httpx.Response:
        url = path.format(ep)
        return c.post(url, json={"input": 1}) if url.endswith("/run") else c.get(url)

    assert call("echo").status_code == 200
    refused = call("other")
    assert refused.status_code == 403
    assert (
        refused.json()["error"] == f"key 'limited' (scope {scope}) may not use endpoint 'other' (only echo)"
    )


def test_a_key_limited_to_two_endpoints(h: Harness) -> None:
    c = as_key(h, create_key(h, "two", "client", ["echo", "e2"]))
    h.queue.endpoints["e2"] = EndpointSpec(name="e2")
    assert c.post("/v2/echo/run", json={"input": 1}).status_code == 200
    assert c.post("/v2/e2/run", json={"input": 1}).status_code == 200
    assert c.post("/v2/other/run", json={"input": 1}).status_code == 403


def test_bearer_and_raw_keys_both_work(h: Harness) -> None:
    worker = create_key(h, "w", "worker")
    client = create_key(h, "c", "client")
    for bearer in (True, False):
        assert as_key(h, worker, bearer).get("/v2/echo/ping/w1").status_code == 200
        assert as_key(h, client, bearer).post("/v2/echo/run", json={"input": 1}).status_code == 200


def test_401_for_missing_unknown_and_revoked_403_for_a_known_key(h: Harness) -> None:
    missing = h.anonymous.post("/v2/echo/run", json={"input": 1})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    unknown = as_key(h, "rpk_" + "x" * 43).get("/api/v1/endpoints")
    assert unknown.status_code == 401 and unknown.json()["error"] == "unknown or revoked key"
    read = as_key(h, create_key(h, "r", "read"))
    assert read.post("/api/v1/autoscaler/disable").status_code == 403


def test_revocation_takes_effect_within_a_second(h: Harness) -> None:
    key = create_key(h, "soon-gone", "client")
    c = as_key(h, key)
    assert c.post("/v2/echo/run", json={"input": 1}).status_code == 200
    assert h.api.delete("/api/v1/keys/soon-gone").json() == {"name": "soon-gone", "revoked": True}
    start = time.monotonic()
    while c.post("/v2/echo/run", json={"input": 1}).status_code != 401:
        assert time.monotonic() - start < 2.0, "a revoked key still worked after 2 s"
        time.sleep(0.05)
    assert h.api.delete("/api/v1/keys/soon-gone").status_code == 404


def test_each_request_does_not_call_the_store(h: Harness) -> None:
    c = as_key(h, create_key(h, "busy", "client"))
    before = h.queue.key_syncs
    for _ in range(20):
        assert c.post("/v2/echo/run", json={"input": 1}).status_code == 200
    assert h.queue.key_syncs - before <= 2, "the key table is cached, checked at most every 0.5 s"


def test_keys_are_stored_as_hashes_and_never_listed(h: Harness) -> None:
    key = create_key(h, "secret-one", "client", ["echo"])
    at_rest = json.dumps([h.queue.access.table, h.queue.access.entries])
    assert key not in at_rest
    assert json.loads(h.queue.access.table["secret-one"])["digest"] != key
    as_key(h, key).post("/v2/echo/run", json={"input": 1})
    time.sleep(0.6)
    as_key(h, key).post("/v2/echo/run", json={"input": 1})  # the next sync reports the last use
    listed = h.api.get("/api/v1/keys")
    assert key not in listed.text and "digest" not in listed.text
    (row,) = listed.json()["keys"]
    assert row["name"] == "secret-one" and row["scope"] == "client" and row["endpoints"] == ["echo"]
    assert row["createdAt"] > 0 and row["lastUsedAt"] is not None


def test_key_creation_input_errors_name_the_field(h: Harness) -> None:
    for body, field in (
        ({"name": "Bad Name", "scope": "read"}, "name"),
        ({"name": "k", "scope": "root"}, "scope"),
        ({"name": "k", "scope": "admin", "endpoints": ["echo"]}, "endpoints"),
    ):
        r = h.api.post("/api/v1/keys", json=body)
        assert r.status_code == 422 and field in json.dumps(r.json()), r.text
    create_key(h, "dup", "read")
    assert h.api.post("/api/v1/keys", json={"name": "dup", "scope": "read"}).status_code == 409


def test_changes_are_audited_with_key_action_target_time_and_request_id(h: Harness) -> None:
    admin2 = as_key(h, create_key(h, "ops", "admin"))
    client = as_key(h, create_key(h, "app", "client"))
    changes: list[tuple[httpx.Response, str, str]] = [
        (admin2.post("/api/v1/endpoints", json={"name": "made"}), "endpoint.create", "made"),
        (admin2.patch("/api/v1/endpoints/made", json={"priority": 2}), "endpoint.update", "made"),
        (
            admin2.put("/api/v1/autoscaler/overrides/made", json={"disabled": True}),
            "autoscaler.override.set",
            "made",
        ),
        (admin2.delete("/api/v1/autoscaler/overrides/made"), "autoscaler.override.clear", "made"),
        (admin2.post("/api/v1/autoscaler/disable"), "autoscaler.disable", ""),
        (admin2.post("/api/v1/autoscaler/enable"), "autoscaler.enable", ""),
        (client.post("/v2/echo/purge-queue"), "queue.purge", "echo"),
        (admin2.delete("/api/v1/endpoints/made"), "endpoint.delete", "made"),
        (admin2.delete("/api/v1/keys/app"), "key.revoke", "app"),
    ]
    # Refused or failed changes are not changes: nothing recorded.
    assert as_key(h, create_key(h, "viewer", "read")).post("/api/v1/autoscaler/disable").status_code == 403
    assert admin2.delete("/api/v1/endpoints/nope").status_code == 404
    entries = h.api.get("/api/v1/audit", params={"limit": 100}).json()["entries"]
    mine = [e for e in entries if e["key"] in ("ops", "app")]
    expected = [(r.headers["x-request-id"], action, target) for r, action, target in reversed(changes)]
    for r, _, _ in changes:
        assert r.status_code < 300, r.text
    assert [(e["requestId"], e["action"], e["target"]) for e in mine] == expected
    assert all(e["at"] > 1_600_000_000_000 for e in entries)
    created = [e for e in entries if e["action"] == "key.create"]
    assert {e["target"] for e in created} == {"ops", "app", "viewer"} and all(
        e["key"] == "RIPPLE_API_KEY" for e in created
    )
    assert h.api.get("/api/v1/audit", params={"limit": 2}).json()["entries"] == entries[:2]
    assert h.api.get("/api/v1/audit", params={"limit": 0}).status_code == 422


# The web UI ---------------------------------------------------------------------------------------------


def ui_login(client: TestClient, key: str) -> httpx.Response:
    page = client.get("/ui/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return client.post("/ui/login", data={"api_key": key, "csrf_token": match.group(1)})


def browser(h: Harness) -> TestClient:
    return TestClient(h.app, follow_redirects=False, raise_server_exceptions=False)


def test_the_ui_with_a_read_key_sees_everything_and_changes_nothing(h: Harness) -> None:
    read_key = create_key(h, "dashboard", "read")
    b = browser(h)
    assert ui_login(b, read_key).status_code == 303
    session: dict[str, Any] = b.get("/ui/session").json()
    assert session["key"] == "dashboard" and session["scope"] == "read"
    csrf = {CSRF_HEADER: session["csrfToken"]}
    for path in ("/api/v1/endpoints", "/api/v1/jobs", "/api/v1/workers", "/api/v1/stats", "/api/v1/audit"):
        assert b.get(path).status_code == 200, path
    assert b.get("/api/v1/keys").status_code == 403
    for r in (
        b.post("/api/v1/autoscaler/disable", headers=csrf),
        b.patch("/api/v1/endpoints/echo", json={"priority": 1}, headers=csrf),
        b.delete("/api/v1/endpoints/echo", headers=csrf),
        b.post("/v2/echo/run", json={"input": 1}, headers=csrf),
        b.post("/v2/echo/purge-queue", headers=csrf),
    ):
        assert r.status_code == 403 and "key 'dashboard' (scope read)" in r.json()["error"], r.text
    assert h.queue.endpoints["echo"].priority == EndpointSpec(name="echo").priority
    # Revoking the key ends its sessions.
    h.api.delete("/api/v1/keys/dashboard")
    start = time.monotonic()
    while b.get("/api/v1/endpoints").status_code != 401:
        assert time.monotonic() - start < 2.0
        time.sleep(0.05)
    assert b.get("/ui/session").status_code == 401


def test_the_ui_with_an_admin_key_changes_things(h: Harness) -> None:
    b = browser(h)
    assert ui_login(b, create_key(h, "boss", "admin")).status_code == 303
    session = b.get("/ui/session").json()
    assert session["scope"] == "admin" and session["key"] == "boss"
    r = b.post("/api/v1/autoscaler/disable", headers={CSRF_HEADER: session["csrfToken"]})
    assert r.status_code == 200
    assert h.api.get("/api/v1/audit").json()["entries"][0]["key"] == "boss"
    legacy = browser(h)
    assert ui_login(legacy, API_KEY).status_code == 303
    assert legacy.get("/ui/session").json()["key"] == "RIPPLE_API_KEY"


@pytest.mark.parametrize("scope", ["client", "worker"])
def test_client_and_worker_keys_may_not_log_in_to_the_ui(h: Harness, scope: str) -> None:
    r = ui_login(browser(h), create_key(h, "k", scope))
    assert r.status_code == 403 and "may not use the web UI" in r.text
    assert ui_login(browser(h), WORKER_KEY).status_code == 403
    assert ui_login(browser(h), "rpk_unknown").status_code == 401


def test_a_ui_session_never_drives_the_worker_protocol(h: Harness) -> None:
    b = browser(h)
    ui_login(b, API_KEY)
    assert b.get("/v2/echo/ping/w1").status_code == 401


def test_insecure_mode_needs_no_key(tmp_path: Path) -> None:
    made = harness(boot(str(tmp_path), auth=False))
    made.queue.endpoints["echo"] = EndpointSpec(name="echo")
    assert made.anonymous.post("/api/v1/autoscaler/disable").status_code == 200
    assert made.anonymous.get("/v2/echo/ping/w1").status_code == 200
    assert made.anonymous.get("/api/v1/audit").json()["entries"][0]["key"] == "insecure"


def test_revocation_reaches_another_replica_within_a_second(h: Harness) -> None:
    """Two replicas of the app (two states, one queue): a key created on one works on the other at once,
    and its revocation on the one is refused by the other within the poll interval."""
    assert h.state.boot is not None
    other = harness(h.state.boot)
    other.app.dependency_overrides.update(h.app.dependency_overrides)  # the same queue actor
    key = create_key(h, "shared", "client")
    c2 = as_key(other, key)
    assert c2.post("/v2/echo/run", json={"input": 1}).status_code == 200
    h.api.delete("/api/v1/keys/shared")
    start = time.monotonic()
    while c2.post("/v2/echo/run", json={"input": 1}).status_code != 401:
        assert time.monotonic() - start < 2.0, "the other replica still took the key after 2 s"
        time.sleep(0.05)


def test_routes_added_by_other_resources_follow_the_same_scopes(h: Harness) -> None:
    """The OpenAI-compatible routes are client routes (endpoint limits included); worker logs are a
    management read; rollback and code packages are management changes."""
    client = as_key(h, create_key(h, "oa", "client", ["echo"]))
    read = as_key(h, create_key(h, "ro", "read"))
    worker = as_key(h, create_key(h, "wk", "worker"))
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    refused = client.post("/v2/other/openai/v1/chat/completions", json=chat)
    assert refused.status_code == 403 and "may not use endpoint 'other'" in refused.json()["error"]
    for c in (read, worker):
        assert c.post("/v2/echo/openai/v1/chat/completions", json=chat).status_code == 403
        assert c.get("/v2/echo/openai/v1/models").status_code == 403
    assert as_key(h, "rpk_nope").get("/v2/echo/openai/v1/models").status_code == 401
    for c in (client, worker):
        assert c.get("/api/v1/workers/w1/logs").status_code == 403
    assert read.post("/api/v1/endpoints/echo/rollback", json={}).status_code == 403
    assert client.post("/api/v1/packages", content=b"PK\x03\x04").status_code == 403
    assert read.post("/api/v1/packages", content=b"PK\x03\x04").status_code == 403


def test_every_route_the_audit_log_records_has_a_recording_dependency() -> None:
    """The /v2 routers admit with a plain dependency (no recording after the route): a client route that the
    audit log names must add ``record_change`` itself, as purge-queue does."""
    assert unrecorded_changes(ROUTERS) == []
    bare = APIRouter(prefix="/v2/{endpoint}", dependencies=[Depends(require_client_key)])

    @bare.post("/purge-queue")
    async def purge() -> None:  # the route without record_change
        return None

    @bare.post("/run")
    async def run() -> None:  # recorded by nobody, as it should be
        return None

    assert unrecorded_changes([bare]) == ["POST /v2/{endpoint}/purge-queue"]
    management = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)])

    @management.post("/endpoints")
    async def create() -> None:
        return None

    assert unrecorded_changes([management]) == []
