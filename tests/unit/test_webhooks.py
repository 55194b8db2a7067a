"""Webhook targets at the edges: the submit-time check with a stubbed resolver, the delivery-time check
against the address the name resolves to then (DNS rebinding), pinned delivery keeping the Host header and the
TLS server name, and the HTTP routes answering 422.

Traffic goes to loopback only: a refused target is decided before any connection, and a stub resolver stands
in for DNS wherever a name must answer a private address.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_fakes import Harness, boot, harness
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from orchestrator.config import QueueConfig
from orchestrator.core.errors import InvalidInput
from orchestrator.core.jobs import JobStatus, encode_output
from orchestrator.core.models import EndpointSpec, NewJob, RunRequest
from orchestrator.core.net_policy import IPAddress, WebhookPolicy, check_literal_webhooks, literal_address
from orchestrator.metrics import QueueMetrics
from orchestrator.store.memory import MemoryStore
from orchestrator.store.protocol import FinishItem
from orchestrator.webhooks import (
    WebhookRefused,
    WebhookSender,
    check_webhook_target,
    check_webhook_targets,
    new_client,
    post_pinned,
    target_refusal,
    webhook_target,
)
from tests.log_lines import log_lines

pytestmark = pytest.mark.timeout(30)

STRICT = WebhookPolicy()


class StubResolver:
    """Answers every name with fixed addresses (or raises), and records what it was asked."""

    def __init__(self, *addresses: str, error: BaseException | None = None, delay_s: float = 0.0) -> None:
        self.addresses = [ipaddress.ip_address(a) for a in addresses]
        self.error = error
        self.delay_s = delay_s
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.asked.append((host, port))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self.addresses


# Submit time ----------------------------------------------------------------------------------------


async def test_a_name_resolving_to_a_private_address_is_refused_naming_the_field() -> None:
    resolver = StubResolver("10.0.0.5")
    with pytest.raises(InvalidInput) as err:
        await check_webhook_target("https://hooks.example/done", STRICT, resolver=resolver)
    assert resolver.asked == [("hooks.example", 443)]
    assert err.value.status_code == 422
    assert err.value.message.startswith("invalid request: webhook: host 'hooks.example' resolves to 10.0.0.5")
    assert "(private)" in err.value.message and "RIPPLE_WEBHOOK_ALLOW" in err.value.message
    assert err.value.detail[0]["loc"] == ["body", "webhook"]


@pytest.mark.parametrize(
    "answer", [("169.254.169.254",), ("93.184.216.34", "127.0.0.1"), ("fd00::1",), ("::ffff:192.168.0.1",)]
)
async def test_any_refused_address_among_the_answers_refuses(answer: tuple[str, ...]) -> None:
    assert await target_refusal("http://hooks.example:8080/", STRICT, StubResolver(*answer)) is not None


async def test_public_answers_pass() -> None:
    resolver = StubResolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    await check_webhook_target("http://hooks.example:8080/x", STRICT, resolver=resolver)
    assert resolver.asked == [("hooks.example", 8080)]


async def test_idn_hosts_are_resolved_in_the_form_that_is_dialled() -> None:
    resolver = StubResolver("93.184.216.34")
    await check_webhook_target("https://exämple.example/", STRICT, resolver=resolver)
    assert resolver.asked == [("xn--exmple-cua.example", 443)]


async def test_literals_and_loopback_names_are_judged_without_dns() -> None:
    resolver = StubResolver(error=AssertionError("no DNS for a literal"))
    for url in ("http://169.254.169.254/latest/meta-data/", "http://localhost:8000/", "http://[::1]/",
                "http://0x7f000001/"):  # fmt: skip
        with pytest.raises(InvalidInput, match="webhook"):
            await check_webhook_target(url, STRICT, resolver=resolver)
    await check_webhook_target("https://93.184.216.34/", STRICT, resolver=resolver)
    await check_webhook_target(None, STRICT, resolver=resolver)
    assert resolver.asked == []


async def test_a_bad_url_is_refused_with_why() -> None:
    with pytest.raises(InvalidInput, match="scheme 'gopher' is not allowed"):
        await check_webhook_target("gopher://hooks.example/", STRICT)


async def test_a_name_that_does_not_resolve_now_is_left_to_delivery() -> None:
    assert (
        await target_refusal("http://nx.example/", STRICT, StubResolver(error=socket.gaierror(-2, "nx")))
        is None
    )
    slow = StubResolver("10.0.0.1", delay_s=5.0)
    assert await target_refusal("http://slow.example/", STRICT, slow, timeout_s=0.05) is None


async def test_the_allowlist_admits_names_and_networks() -> None:
    by_name = WebhookPolicy.parse(["hooks.internal"])
    resolver = StubResolver("10.0.0.5")
    await check_webhook_target("http://hooks.internal/", by_name, resolver=resolver)
    assert resolver.asked == [], "a name allowed by name is trusted whatever it resolves to"
    by_cidr = WebhookPolicy.parse(["10.0.0.0/24"])
    await check_webhook_target("http://a.internal/", by_cidr, resolver=StubResolver("10.0.0.5"))
    with pytest.raises(InvalidInput, match=r"10\.0\.1\.5"):
        await check_webhook_target("http://a.internal/", by_cidr, resolver=StubResolver("10.0.1.5"))


async def test_a_batch_names_the_first_refused_job_and_resolves_each_url_once() -> None:
    private = StubResolver("192.168.7.7")
    urls = [None, "http://a.example/", "http://a.example/", "http://b.example/"]
    with pytest.raises(InvalidInput) as err:
        await check_webhook_targets(urls, STRICT, resolver=private)
    assert err.value.detail[0]["loc"] == ["body", "jobs", "1", "webhook"]
    assert err.value.message.startswith("invalid request: jobs.1.webhook: host 'a.example' resolves to")
    assert sorted(private.asked) == [("a.example", 80), ("b.example", 80)]
    await check_webhook_targets([None, "http://a.example/"], STRICT, resolver=StubResolver("93.184.216.34"))


# Delivery time ----------------------------------------------------------------------------------------


class Recorder:
    """A transport that records requests and answers 200: proves that nothing was sent (no network)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200)


def outcome(metrics: QueueMetrics, name: str) -> float:
    return metrics.registry.get_sample_value("ripple_webhooks_total", {"outcome": name}) or 0.0


async def sender_with_job(
    webhook: str, resolver: StubResolver, allow: tuple[str, ...] = (), attempts: int = 3
) -> tuple[WebhookSender, MemoryStore, QueueMetrics]:
    store = MemoryStore()
    job = NewJob("j1", "ep", '{"x":1}', 60_000, 60_000, 0, webhook=webhook)
    await store.submit("ep", [job], None, 1_000)
    assert (await store.move("j1", "CANCELLED", 2_000, "cancelled")).moved, "final: its webhook is queued"
    assert await store.webhook_claim(10) == ["j1"]
    config = QueueConfig(
        redis_url="redis://unused", webhook_max_attempts=attempts, webhook_backoff_s=0.01, webhook_allow=allow
    )
    metrics = QueueMetrics()
    return WebhookSender(store, metrics, config, resolver=resolver), store, metrics  # type: ignore[arg-type]


async def test_delivery_rechecks_the_address_the_name_resolves_to_now() -> None:
    """DNS rebinding: accepted at submit (public then), the name answers a private address at delivery."""
    rebinding = StubResolver("93.184.216.34")
    await check_webhook_target("http://rebind.example/hook", STRICT, resolver=rebinding)
    rebinding.addresses = [ipaddress.ip_address("169.254.169.254")]
    sender, store, metrics = await sender_with_job("http://rebind.example/hook", rebinding)
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        await sender._deliver(client, "j1")
    assert recorder.requests == [], "nothing is sent to a refused address"
    assert rebinding.asked[-1] == ("rebind.example", 80) and len(rebinding.asked) == 2, (
        "refused once, no retry"
    )
    assert outcome(metrics, "refused") == 1 and outcome(metrics, "failed") == 0
    assert outcome(metrics, "retried") == 0 and outcome(metrics, "delivered") == 0
    assert store.webhooks_inflight == [] and store.webhooks == [], "the delivery is done with"


async def test_delivery_refuses_literals_without_resolving() -> None:
    resolver = StubResolver(error=AssertionError("no DNS for a literal"))
    sender, _, metrics = await sender_with_job("http://10.1.2.3:8080/hook", resolver)
    recorder = Recorder()
    with log_lines("ripple.webhooks", logging.WARNING) as lines:
        async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
            await sender._deliver(client, "j1")
    assert recorder.requests == [] and resolver.asked == []
    assert outcome(metrics, "refused") == 1
    assert any(
        line.startswith("webhook for job j1 refused, not sent: 10.1.2.3 is not an allowed webhook target")
        for line in lines
    ), lines


async def test_delivery_retries_a_name_that_does_not_resolve() -> None:
    resolver = StubResolver(error=socket.gaierror(-2, "Name or service not known"))
    sender, store, metrics = await sender_with_job("http://nx.example/hook", resolver, attempts=3)
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        await sender._deliver(client, "j1")
    assert len(resolver.asked) == 3 and recorder.requests == []
    assert (
        outcome(metrics, "retried") == 3
        and outcome(metrics, "failed") == 1
        and outcome(metrics, "refused") == 0
    )
    assert store.webhooks_inflight == []


async def test_each_delivery_outcome_is_kept_for_the_endpoint() -> None:
    now_s = time.time()
    refused, _, _ = await sender_with_job("http://10.1.2.3/hook", StubResolver())
    async with httpx.AsyncClient(transport=httpx.MockTransport(Recorder())) as client:
        await refused._deliver(client, "j1")
    summary = refused.outcomes("ep", time.time())
    assert summary is not None and (summary["refused"], summary["failed"], summary["delivered"]) == (1, 0, 0)
    last = summary["lastProblem"]
    assert (last["jobId"], last["outcome"]) == ("j1", "refused") and last["atS"] >= now_s
    assert last["reason"].startswith("10.1.2.3 is not an allowed webhook target")

    failing, _, _ = await sender_with_job("http://hooks.example/", StubResolver("93.184.216.34"), attempts=2)
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(503))) as client:
        await failing._deliver(client, "j1")
    summary = failing.outcomes("ep", time.time())
    assert summary is not None and (summary["failed"], summary["refused"]) == (1, 0)
    assert summary["lastProblem"]["reason"] == "HTTP 503 after 2 attempts"
    failing.forget("ep")
    assert failing.outcomes("ep", time.time()) is None

    fine, _, _ = await sender_with_job("http://hooks.example/", StubResolver("93.184.216.34"))
    async with httpx.AsyncClient(transport=httpx.MockTransport(Recorder())) as client:
        await fine._deliver(client, "j1")
    summary = fine.outcomes("ep", time.time())
    assert summary is not None and summary["delivered"] == 1 and "lastProblem" not in summary


async def test_a_restarted_queue_still_shows_the_deliveries_that_did_not_arrive() -> None:
    """The outcome goes to the store with the end of the delivery; a new sender (the queue restarted) on
    the same store reads it back before it delivers anything."""
    failing, store, metrics = await sender_with_job(
        "http://hooks.example/", StubResolver("93.184.216.34"), attempts=1
    )
    await store.put_endpoint("ep", '{"name":"ep"}')
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500))) as client:
        await failing._deliver(client, "j1")
    assert store.webhooks_inflight == [], "the delivery ended"
    restarted = WebhookSender(store, metrics, failing.cfg)  # type: ignore[arg-type]
    assert restarted.outcomes("ep", time.time()) is None
    await restarted.restore()
    after = restarted.outcomes("ep", time.time())
    assert after == failing.outcomes("ep", time.time())
    assert (
        after is not None
        and after["failed"] == 1
        and after["lastProblem"]["reason"] == "HTTP 500 after 1 attempt"
    )
    await store.delete_endpoint("ep")
    again = WebhookSender(store, metrics, failing.cfg)  # type: ignore[arg-type]
    await again.restore()
    assert again.outcomes("ep", time.time()) is None, "a deleted endpoint's outcomes go with it"


class _FailingFirst:
    """``store`` whose first ``failures`` reads of the endpoints fail (Redis down as the queue starts)."""

    def __init__(self, store: MemoryStore, failures: int) -> None:
        self.store = store
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def load_endpoints(self) -> dict[str, str]:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("store down")
        return await self.store.load_endpoints()


async def test_outcomes_are_read_back_once_the_store_answers() -> None:
    """A queue that starts while the store fails delivers on and reads the earlier outcomes back at a later
    poll, once the store answers; the failure shown before the restart is shown again."""
    failing, store, metrics = await sender_with_job(
        "http://hooks.example/", StubResolver("93.184.216.34"), attempts=1
    )
    await store.put_endpoint("ep", '{"name":"ep"}')
    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(500))) as client:
        await failing._deliver(client, "j1")
    down = _FailingFirst(store, failures=2)
    restarted = WebhookSender(down, metrics, failing.cfg)  # type: ignore[arg-type]
    running = asyncio.create_task(restarted.run())
    try:
        for _ in range(100):
            if restarted.outcomes("ep", time.time()) is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert down.failures == 0, "read again after each failure"
    assert restarted.outcomes("ep", time.time()) == failing.outcomes("ep", time.time())


async def test_post_pinned_sends_to_the_checked_address_with_the_original_host() -> None:
    recorder = Recorder()
    resolver = StubResolver("93.184.216.34")
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        reply = await post_pinned(
            client, "https://u:p@hooks.example:8443/a?b=1", b'{"id":"j"}', STRICT, resolver
        )
    assert reply.status_code == 200
    (sent,) = recorder.requests
    assert str(sent.url) == "https://u:p@93.184.216.34:8443/a?b=1"
    assert sent.headers["host"] == "hooks.example:8443"
    assert sent.extensions["sni_hostname"] == "hooks.example"
    assert json.loads(sent.content) == {"id": "j"} and sent.headers["content-type"] == "application/json"
    with pytest.raises(WebhookRefused, match=r"resolves to 10\.0\.0\.1"):
        await post_pinned(client, "https://hooks.example/", b"{}", STRICT, StubResolver("10.0.0.1"))


async def test_the_body_carries_the_output_as_stored_not_decoded_and_encoded_again() -> None:
    """A webhook is sent by the queue actor: an output of megabytes is put into the body as the store keeps
    it (:meth:`JobView.status_json`), not decoded and encoded again on the queue's event loop."""
    store = MemoryStore()
    await store.submit(
        "ep", [NewJob("j1", "ep", "{}", 60_000, 60_000, 0, webhook="https://hooks.example/")], None, 1
    )
    assert [t.id for t in await store.take("ep", "w1", 1, 2)] == ["j1"]
    stored = encode_output({"caption": "un café ✓", "score": float("nan"), "image": "iVBORw0KGgo" * 1000})
    (done,) = await store.finish([FinishItem("j1", "w1", JobStatus.COMPLETED, stored)], 3)
    assert done.applied and await store.webhook_claim(10) == ["j1"]
    config = QueueConfig(redis_url="redis://unused", webhook_max_attempts=1)
    sender = WebhookSender(store, QueueMetrics(), config, resolver=StubResolver("93.184.216.34"))  # type: ignore[arg-type]
    recorder = Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        await sender._deliver(client, "j1")
    (sent,) = recorder.requests
    assert sent.content.endswith(f',"output":{stored}}}'.encode()), "the stored text, as it is"
    assert sent.headers["content-type"] == "application/json"
    body = json.loads(sent.content)
    assert (body["id"], body["status"], body["workerId"]) == ("j1", "COMPLETED", "w1")
    assert body["output"]["caption"] == "un café ✓" and body["output"]["score"] is None


# Pinned delivery over real sockets, on loopback only -------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers["Host"], body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def _serve(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def hook_server() -> Iterator[ThreadingHTTPServer]:
    handler = type("Hook", (_Hook,), {"received": []})
    yield from _serve(ThreadingHTTPServer(("127.0.0.1", 0), handler))


async def test_pinned_delivery_to_an_allowed_loopback_name_keeps_the_host_header(
    hook_server: ThreadingHTTPServer,
) -> None:
    port = hook_server.server_address[1]
    # The first address has no listener (127.0.0.2 is loopback too): the next checked address is dialled.
    resolver = StubResolver("127.0.0.2", "127.0.0.1")
    url = f"http://hooks.example:{port}/done"
    sender, _, metrics = await sender_with_job(url, resolver, allow=("127.0.0.0/8",))
    async with new_client(5.0) as client:
        await sender._deliver(client, "j1")
    handler: Any = hook_server.RequestHandlerClass
    ((path, host, body),) = handler.received
    assert (path, host) == ("/done", f"hooks.example:{port}")
    assert body["id"] == "j1" and body["status"] == "CANCELLED"
    assert outcome(metrics, "delivered") == 1 and outcome(metrics, "refused") == 0
    assert resolver.asked == [("hooks.example", port)], (
        "resolved once: the connection used the checked address"
    )


async def test_without_the_allowlist_the_same_delivery_is_refused(hook_server: ThreadingHTTPServer) -> None:
    port = hook_server.server_address[1]
    sender, _, metrics = await sender_with_job(f"http://hooks.example:{port}/done", StubResolver("127.0.0.1"))
    async with new_client(5.0) as client:
        await sender._deliver(client, "j1")
    handler: Any = hook_server.RequestHandlerClass
    assert handler.received == [] and outcome(metrics, "refused") == 1


def _tls_material(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for ``name`` only (no IP address) signed by it: (ca, cert, key) PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_cert = cert("test CA", ca_key, "test CA", ca_key, True)
    leaf = cert(name, leaf_key, "test CA", ca_key, False)
    paths = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


async def test_pinned_https_delivery_verifies_the_certificate_of_the_name(tmp_path: Path) -> None:
    ca, cert, key = _tls_material(tmp_path, "hooks.example")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_names: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, sni, _ctx: server_names.append(sni)
    handler: Any = type("Hook", (_Hook,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    client_ctx = ssl.create_default_context(cafile=str(ca))
    for _ in _serve(server):
        resolver = StubResolver("127.0.0.1")
        allow = WebhookPolicy.parse(["127.0.0.1"])
        async with new_client(5.0, verify=client_ctx) as client:
            reply = await post_pinned(
                client, f"https://hooks.example:{port}/tls", b'{"id":"t"}', allow, resolver
            )
            assert reply.status_code == 204
            with pytest.raises(httpx.ConnectError, match=r"CERTIFICATE_VERIFY_FAILED|hostname"):
                # The same server under another name: its certificate does not match, the pin changes nothing.
                await post_pinned(client, f"https://other.example:{port}/tls", b'{"id":"u"}', allow, resolver)
    assert handler.received == [("/tls", f"hooks.example:{port}", {"id": "t"})]
    assert server_names[:2] == ["hooks.example", "other.example"], "SNI is the name, not the pinned address"


# The HTTP routes ----------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Harness:
    """The app on fakes of the actors, its instance allowing 127.0.0.1 (as the e2e instances do)."""
    resolved = boot(str(tmp_path))
    return harness(replace(resolved, queue=replace(resolved.queue, webhook_allow=("127.0.0.1",))))


@pytest.mark.parametrize(
    "hook",
    ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[fd00::1]/", "http://localhost:80/",
     "http://127.0.0.2/", "http://0.0.0.0:8000/"],
)  # fmt: skip
def test_run_routes_refuse_with_422_naming_webhook(api: Harness, hook: str) -> None:
    api.queue.endpoints["ep"] = EndpointSpec(name="ep")
    for route in ("run", "runsync"):
        r = api.api.post(f"/v2/ep/{route}", json={"input": 1, "webhook": hook})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"].startswith("invalid request: webhook: "), body
        assert "not an allowed webhook target" in body["error"]
        assert body["detail"][0]["loc"] == ["body", "webhook"]
    r = api.api.post("/v2/ep/run-batch", json={"jobs": [{"input": 1}, {"input": 2, "webhook": hook}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "jobs", "1", "webhook"], r.text
    assert api.queue.calls == [] and api.queue.jobs == {}, "nothing reached the queue"


def test_run_routes_accept_an_allowed_target(api: Harness) -> None:
    api.queue.endpoints["ep"] = EndpointSpec(name="ep")
    hook = "http://127.0.0.1:9/hook"
    assert api.api.post("/v2/ep/run", json={"input": 1, "webhook": hook}).status_code == 200
    assert api.api.post("/v2/ep/runsync", json={"input": 1, "webhook": hook}).status_code == 200
    r = api.api.post("/v2/ep/run-batch", json={"jobs": [{"input": 1, "webhook": hook}, {"input": 2}]})
    assert r.status_code == 200 and len(r.json()["ids"]) == 2
    assert [j.request.webhook for j in api.queue.jobs.values()] == [hook, hook, hook, None]


# Any input: a 422 or a pass, never an unexpected error ------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60).map(lambda s: "http://" + s),
        st.from_regex(r"\Ahttps?://[\[\]a-z0-9.:%@\\/\-x]{0,30}\Z"),
        st.text(max_size=40),
    )
)
def test_any_webhook_string_is_judged_without_an_unexpected_error(url: str) -> None:
    accepted = False
    with contextlib.suppress(ValidationError, InvalidInput):
        check_literal_webhooks([RunRequest.model_validate({"input": 1, "webhook": url}).webhook], STRICT)
        accepted = True
    # Every name resolves to a private address here: only a public literal address may pass the edge.
    reason = asyncio.run(target_refusal(url, STRICT, StubResolver("10.0.0.1")))
    assert reason is None or isinstance(reason, str)
    if accepted and reason is None:
        assert literal_address(webhook_target(url).host) is not None, url
