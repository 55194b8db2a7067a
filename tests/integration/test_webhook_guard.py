"""The webhook guard inside a real queue actor (local Ray, embedded Redis): the in-cluster submit path refuses
a non-public target, an allowed loopback target is delivered, and a job whose webhook is no longer allowed
(accepted under an earlier allowlist) is refused at delivery, not sent, and counted.

Traffic goes to loopback only: the hook servers listen on 127.0.0.1 and 127.0.0.2.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from orchestrator.client import InClusterClient
from orchestrator.core.errors import InvalidInput
from orchestrator.core.models import EndpointSpec, NewJob, RunRequest
from orchestrator.store.redis import RedisStore
from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(300)

RAY_INIT = {"num_cpus": 2, "num_gpus": 0}
SETTINGS = {"webhook_allow": ["127.0.0.1"], "webhook_backoff_s": 0.2, "webhook_max_attempts": 2}


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, Any]]

    def do_POST(self) -> None:
        self.received.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _server(address: str) -> Iterator[tuple[int, list[tuple[str, Any]]]]:
    handler: Any = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allowed_hook() -> Iterator[tuple[int, list[tuple[str, Any]]]]:
    yield from _server("127.0.0.1")


@pytest.fixture
def other_loopback_hook() -> Iterator[tuple[int, list[tuple[str, Any]]]]:
    """On 127.0.0.2: loopback, but not in this instance's allowlist (only 127.0.0.1 is)."""
    yield from _server("127.0.0.2")


def _endpoint(rp: Ripple) -> str:
    name = f"hooks-{uuid.uuid4().hex[:6]}"
    rp.call(rp.queue.create_endpoint.remote(EndpointSpec(name=name, handler=None)))
    return name


def test_in_cluster_submit_refuses_non_public_targets(rp: Ripple) -> None:
    ep = _endpoint(rp)
    client = InClusterClient(rp.namespace)
    with pytest.raises(InvalidInput, match=r"invalid request: webhook: 169\.254\.169\.254 is not an allowed"):
        client.submit(ep, {"x": 1}, webhook="http://169.254.169.254/latest/meta-data/")
    batch = [RunRequest(input=1), RunRequest(input=2, webhook="http://[fd00::1]/")]
    with pytest.raises(InvalidInput, match=r"invalid request: jobs\.1\.webhook: .*unique-local"):
        rp.call(rp.queue.submit.remote(ep, batch))
    with pytest.raises(InvalidInput, match="loopback name"):
        client.submit(ep, {"x": 1}, webhook="http://localhost:8000/")
    health = rp.call(rp.queue.health.remote(ep))
    assert health["jobs"]["inQueue"] == 0, "all or nothing: the refused batch queued nothing"


def test_allowed_loopback_target_is_delivered(rp: Ripple, allowed_hook: tuple[int, list[Any]]) -> None:
    port, received = allowed_hook
    ep = _endpoint(rp)
    job_id = InClusterClient(rp.namespace).submit(ep, {"x": 1}, webhook=f"http://127.0.0.1:{port}/done")
    rp.call(rp.queue.cancel.remote(ep, job_id))
    wait_for(lambda: received, 30, "the webhook of the cancelled job")
    ((path, body),) = received
    assert path == "/done" and body["id"] == job_id and body["status"] == "CANCELLED"


def test_a_target_no_longer_allowed_is_refused_at_delivery(
    rp: Ripple, other_loopback_hook: tuple[int, list[Any]]
) -> None:
    port, received = other_loopback_hook
    ep = _endpoint(rp)
    job_id = f"old-{uuid.uuid4().hex[:8]}"

    async def accepted_earlier() -> None:
        # Written as an earlier allowlist (one listing 127.0.0.2) would have let it in.
        store = RedisStore.connect(rp.redis_url, rp.boot.queue.key_prefix)
        job = NewJob(job_id, ep, '{"x":1}', 60_000, 60_000, 0, webhook=f"http://127.0.0.2:{port}/hook")
        await store.submit(ep, [job], None, int(time.time() * 1000))  # now: its queue TTL not yet passed
        await store.close()

    asyncio.run(accepted_earlier())
    before = _refused(rp)
    rp.call(rp.queue.cancel.remote(ep, job_id))
    wait_for(lambda: _refused(rp) == before + 1, 30, "the delivery to be refused")
    assert received == [], "nothing was sent to the refused address"


def _refused(rp: Ripple) -> float:
    text = rp.call(rp.queue.metrics_text.remote()).decode()
    for line in text.splitlines():
        if line.startswith('ripple_webhooks_total{outcome="refused"}'):
            return float(line.split()[-1])
    return 0.0
