"""Webhook delivery: POST a job's final status object to its webhook, retried with backoff.

Runs as a background task of the queue actor and never blocks dispatch. Pending deliveries live in Redis
(``webhooks`` / ``webhooks:inflight``), so a restart resumes them: delivery is at least once.

Where a webhook may go (:mod:`orchestrator.core.net_policy`) is checked twice:

- at submit, by :func:`check_webhook_target` (the HTTP client routes call it; the queue actor refuses
  literal addresses and loopback names for every caller, in-cluster clients included, with
  :func:`orchestrator.core.net_policy.check_literal_webhooks`). It resolves the host and refuses it when
  any address it resolves to is refused (``InvalidInput``, 422). A name that does not resolve now is let
  through: delivery decides.
- at delivery, by :func:`post_pinned`, against the addresses the host resolves to *then* (DNS rebinding:
  a name may answer a public address at submit and a private one later). It resolves once, checks every
  address, and connects to a checked address itself: the request URL's host is replaced by that address
  while the ``Host`` header and the TLS server name (SNI and certificate check, httpx's ``sni_hostname``
  request extension) stay the original host, so nothing resolves the name a second time. The client keeps
  no idle connections (its pool is keyed by address, and a TLS connection verified for one name must not
  carry another name's request) and ignores proxy settings from the environment (a proxy would resolve the
  name itself). A refused delivery is logged, counted (``ripple_webhooks{outcome="refused"}``) and not
  retried; a name that does not resolve is retried like a connection failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from orchestrator import logs
from orchestrator.core.net_policy import (
    DEFAULT_PORTS,
    IPAddress,
    WebhookPolicy,
    WebhookTarget,
    literal_address,
    normalize_host,
    parse_webhook_url,
    policy_of,
    refusal_error,
)
from orchestrator.core.webhook_outcomes import Outcome, WebhookOutcomes, entry

if TYPE_CHECKING:
    from orchestrator.config import QueueConfig
    from orchestrator.core.jobs import JobView
    from orchestrator.metrics import QueueMetrics
    from orchestrator.store.redis import RedisStore

log = logging.getLogger("ripple.webhooks")


Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]
"""``resolver(host, port)``: the addresses a TCP connection to ``host`` may use (raises OSError when none)."""

SUBMIT_RESOLVE_TIMEOUT_S = 2.0
SUBMIT_RESOLVE_CONCURRENCY = 16


def backoff_s(attempt: int, base_s: float, cap_s: float = 60.0) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2 x base, 4 x base, … capped."""
    return float(min(cap_s, base_s * (2 ** (attempt - 1))))


class WebhookRefused(Exception):
    """The webhook's target is not allowed (its reason is the message); never retried."""


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``getaddrinfo`` gives for a TCP connection to ``host:port``, in its order, once each."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(sockaddr[0])
        if ip not in out:
            out.append(ip)
    return out


def webhook_target(url: str) -> WebhookTarget:
    """``url`` taken apart as httpx will dial it: the host in its IDNA (ASCII) form.

    Raises:
        ValueError: the URL is not an acceptable webhook URL (see ``parse_webhook_url``).
    """
    checked = parse_webhook_url(url)
    try:
        parsed = httpx.URL(url)
        host = normalize_host(parsed.raw_host.decode("ascii"))
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"URL is not valid ({exc})") from None
    if not host:
        raise ValueError("URL has no host")
    return WebhookTarget(checked.scheme, host, parsed.port or DEFAULT_PORTS[checked.scheme])


async def target_refusal(
    url: str, allow: WebhookPolicy, resolver: Resolver = resolve, timeout_s: float = SUBMIT_RESOLVE_TIMEOUT_S
) -> str | None:
    """Why a webhook to ``url`` is refused at submit, or None. A host that cannot be resolved within
    ``timeout_s`` is not refused here (delivery resolves and checks again)."""
    try:
        target = webhook_target(url)
    except ValueError as exc:
        return str(exc)
    reason = allow.host_refusal(target)
    if reason is not None or allow.allows_host(target.host) or literal_address(target.host) is not None:
        return reason
    try:
        addresses = await asyncio.wait_for(resolver(target.host, target.port), timeout_s)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:  # UnicodeError is a ValueError
        log.debug("webhook host %r not resolved at submit (%s); checked at delivery", target.host, exc)
        return None
    return allow.addresses_refusal(target, addresses)


async def check_webhook_target(
    url: str | None,
    allow: WebhookPolicy,
    *,
    loc: Sequence[str | int] = ("body", "webhook"),
    resolver: Resolver = resolve,
) -> None:
    """Refuse (``InvalidInput``, 422, naming the field at ``loc`` and why) a webhook whose host is, or
    resolves to, an address ``allow`` does not admit. ``None`` (no webhook) passes."""
    if url is None:
        return
    reason = await target_refusal(url, allow, resolver)
    if reason is not None:
        raise refusal_error(loc, reason)


async def check_webhook_targets(
    urls: Sequence[str | None],
    allow: WebhookPolicy,
    *,
    loc: Sequence[str | int] = ("body", "jobs"),
    resolver: Resolver = resolve,
) -> None:
    """:func:`check_webhook_target` for a batch: each distinct URL checked once (a few at a time); the first
    refused job (in batch order) is named as ``loc + (index, "webhook")``."""
    distinct = {u for u in urls if u is not None}
    if not distinct:
        return
    gate = asyncio.Semaphore(SUBMIT_RESOLVE_CONCURRENCY)

    async def one(url: str) -> tuple[str, str | None]:
        async with gate:
            return url, await target_refusal(url, allow, resolver)

    reasons = dict(await asyncio.gather(*(one(u) for u in distinct)))
    for index, url in enumerate(urls):
        reason = None if url is None else reasons[url]
        if reason is not None:
            raise refusal_error((*loc, index, "webhook"), reason)


async def post_pinned(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    allow: WebhookPolicy,
    resolver: Resolver = resolve,
    resolve_timeout_s: float = 10.0,
) -> httpx.Response:
    """POST ``body`` (JSON text) to ``url``, connecting only to an address checked against ``allow``.

    Resolves the host once, refuses when any address is refused, then sends to the first address that
    accepts a connection, with the original ``Host`` header and TLS server name (see the module docstring).

    Raises:
        WebhookRefused: the target is not allowed (do not retry).
        httpx.HTTPError: the host did not resolve, or no address could be reached (retry).
    """
    try:
        target = webhook_target(url)
    except ValueError as exc:
        raise WebhookRefused(str(exc)) from None
    reason = allow.host_refusal(target)
    if reason is not None:
        raise WebhookRefused(reason)
    literal = literal_address(target.host)
    if literal is not None:
        addresses: Sequence[IPAddress] = [literal]
    else:
        try:
            addresses = await asyncio.wait_for(resolver(target.host, target.port), resolve_timeout_s)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            raise httpx.ConnectError(f"cannot resolve {target.host!r}: {exc or type(exc).__name__}") from None
        if not addresses:
            raise httpx.ConnectError(f"{target.host!r} resolved to no address")
        reason = allow.addresses_refusal(target, addresses)
        if reason is not None:
            raise WebhookRefused(reason)
    original = httpx.URL(url)
    headers = {"Host": original.netloc.decode("ascii"), "Content-Type": "application/json"}
    extensions = {"sni_hostname": target.host} if target.scheme == "https" and literal is None else {}
    failure: httpx.ConnectError | None = None
    for ip in addresses:
        try:
            return await client.post(
                original.copy_with(host=str(ip)), content=body, headers=headers, extensions=extensions
            )
        except httpx.ConnectError as exc:  # the next address, as a dialler would
            failure = exc
    assert failure is not None
    raise failure


def new_client(timeout_s: float, **kwargs: Any) -> httpx.AsyncClient:
    """The delivery client: no idle connections kept, no proxy or netrc from the environment, redirects not
    followed (see the module docstring)."""
    return httpx.AsyncClient(
        timeout=timeout_s,
        trust_env=False,
        follow_redirects=False,
        limits=httpx.Limits(max_keepalive_connections=0),
        **kwargs,
    )


class WebhookSender:
    """Claims pending deliveries and sends each in its own task."""

    def __init__(
        self, store: RedisStore, metrics: QueueMetrics, config: QueueConfig, resolver: Resolver = resolve
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.cfg = config
        self.policy = policy_of(config.webhook_allow)
        self.resolver = resolver
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._outcomes = WebhookOutcomes()

    def kick(self) -> None:
        """Something may be pending: look now rather than at the next poll."""
        self._wake.set()

    def outcomes(self, endpoint: str, now_s: float) -> dict[str, Any] | None:
        """What became of the endpoint's deliveries lately (:meth:`WebhookOutcomes.summary`)."""
        return self._outcomes.summary(endpoint, now_s)

    def forget(self, endpoint: str) -> None:
        self._outcomes.forget(endpoint)

    async def restore(self) -> None:
        """Read back the outcomes a queue before this one kept in the store (once, before :meth:`run`)."""
        endpoints = list(await self.store.load_endpoints())
        for endpoint, entries in (await self.store.webhook_outcomes(endpoints)).items():
            self._outcomes.restore(endpoint, entries)

    async def run(self) -> None:
        """Deliver forever. The outcomes a queue before this one kept are read back first, or, while the
        store fails, at each poll until they are: deliveries go on meanwhile."""
        restored, tries = False, 0
        failures = logs.RepeatedFailure(log, "webhook claim", time.monotonic)
        async with new_client(self.cfg.webhook_timeout_s) as client:
            while True:
                if not restored:
                    tries += 1
                    restored = await self._read_back(tries)
                try:
                    claimed = await self.store.webhook_claim(100)
                    failures.succeeded()
                    for job_id in claimed:
                        task = asyncio.get_running_loop().create_task(self._deliver(client, job_id))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                except Exception as exc:
                    failures.failed(exc)
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)

    async def _read_back(self, tries: int) -> bool:
        """:meth:`restore`; False when the store failed (logged, with its traceback the first time)."""
        try:
            await self.restore()
        except Exception:
            log.warning("earlier webhook outcomes not read back (try %d)", tries, exc_info=tries == 1)
            return False
        return True

    async def _deliver(self, client: httpx.AsyncClient, job_id: str) -> None:
        job = (await self.store.get_statuses([job_id]))[0]
        if job is None or not job.webhook:
            await self.store.webhook_done(job_id)
            return
        body = job.status_json(int(time.time() * 1000)).encode()  # the stored output as it is
        ended: str
        for attempt in range(1, self.cfg.webhook_max_attempts + 1):
            try:
                reply = await post_pinned(
                    client, job.webhook, body, self.policy, self.resolver, self.cfg.webhook_timeout_s
                )
                if reply.status_code < 400:
                    ended = self._ended(job, "delivered")
                    break
                reason = f"HTTP {reply.status_code}"
            except WebhookRefused as exc:
                ended = self._ended(job, "refused", str(exc))
                log.warning("webhook for job %s refused, not sent: %s", job_id, exc, extra={"job_id": job_id})
                break
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            self.metrics.webhooks.labels("retried").inc()
            log.warning("webhook for job %s failed (%s), attempt %d", job_id, reason, attempt)
            if attempt < self.cfg.webhook_max_attempts:
                await asyncio.sleep(backoff_s(attempt, self.cfg.webhook_backoff_s))
        else:
            tries = self.cfg.webhook_max_attempts
            ended = self._ended(job, "failed", f"{reason} after {tries} attempt{'s' if tries > 1 else ''}")
        await self.store.webhook_done(job_id, job.endpoint, ended)

    def _ended(self, job: JobView, outcome: Outcome, reason: str = "") -> str:
        """Count and record the delivery's outcome; its stored form (:func:`entry`)."""
        self.metrics.webhooks.labels(outcome).inc()
        now_s = time.time()
        self._outcomes.record(job.endpoint, outcome, now_s, job.id, reason)
        return entry(outcome, now_s, job.id, reason)
