"""Named API keys through a real ``ripple up``: ``ripple keys create|list|revoke``, scopes and endpoint
limits on the client and worker routes, revocation within a second, only digests in the instance's Redis,
and the audit log."""

from __future__ import annotations

import time
import uuid

import httpx
import redis
from conftest import Instance, run_cli

from orchestrator.ops.embedded_redis import socket_path


def keys_cli(inst: Instance, *args: str) -> str:
    r = run_cli(["--data-dir", str(inst.data_dir), "keys", *args], env=inst.env)
    assert r.returncode == 0, r.stderr + r.stdout
    return r.stdout


def http(inst: Instance, key: str, bearer: bool = True) -> httpx.Client:
    value = f"Bearer {key}" if bearer else key
    return httpx.Client(base_url=inst.url, headers={"Authorization": value}, timeout=30)


def test_scoped_keys_through_a_real_instance(ripple_app: Instance) -> None:
    inst = ripple_app
    ep = inst.create_endpoint("keys")
    other = inst.create_endpoint("keys-other")
    name = f"e2e-{uuid.uuid4().hex[:6]}"
    out = keys_cli(inst, "create", name, "--scope", "client", "--endpoint", ep)
    key = out.splitlines()[1].strip()
    assert key.startswith("rpk_") and "cannot be shown again" in out

    with http(inst, key) as c:
        assert c.post(f"/v2/{ep}/run", json={"input": {"n": 1}}).status_code == 200
        refused = c.post(f"/v2/{other}/run", json={"input": {"n": 1}})
        assert refused.status_code == 403
        assert refused.json()["error"] == (
            f"key '{name}' (scope client) may not use endpoint '{other}' (only {ep})"
        )
        assert c.get("/api/v1/endpoints").status_code == 403
        assert c.get(f"/v2/{ep}/ping/w-keys").status_code == 403
    worker_name = f"{name}-w"
    worker_key = keys_cli(inst, "create", worker_name, "--scope", "worker").splitlines()[1].strip()
    with http(inst, worker_key, bearer=False) as w:  # workers send the raw key
        assert w.get(f"/v2/{ep}/ping/w-keys").status_code == 200
        assert w.post(f"/v2/{ep}/run", json={"input": 1}).status_code == 403

    listed = keys_cli(inst, "list")
    assert name in listed and key not in listed and worker_key not in listed

    # Only digests in the store.
    client = redis.Redis.from_url(f"unix://{socket_path(inst.data_dir)}", decode_responses=True)
    for redis_key in client.scan_iter(match="*apikeys*"):
        values = (
            client.hgetall(redis_key) if client.type(redis_key) == "hash" else {"": client.get(redis_key)}
        )
        assert all(key not in str(v) and worker_key not in str(v) for v in values.values())

    keys_cli(inst, "revoke", name)
    start = time.monotonic()
    with http(inst, key) as c:
        while (r := c.post(f"/v2/{ep}/run", json={"input": 1})).status_code != 401:
            assert r.status_code == 200 and time.monotonic() - start < 2.0, r.text
            time.sleep(0.05)
    assert f" {name} " not in keys_cli(inst, "list")
    keys_cli(inst, "revoke", worker_name)

    with inst.client() as admin:
        entries = admin.get("/api/v1/audit", params={"limit": 50}).json()["entries"]
    seen = {(e["action"], e["target"], e["key"]) for e in entries}
    assert ("endpoint.create", ep, "RIPPLE_API_KEY") in seen
    assert ("key.create", name, "RIPPLE_API_KEY") in seen
    assert ("key.revoke", name, "RIPPLE_API_KEY") in seen
    assert all(e["requestId"] for e in entries if e["target"] == name)
