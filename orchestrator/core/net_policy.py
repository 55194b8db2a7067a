"""Where Ripple may send a webhook: URL shape, address classification and the operator's allowlist.

Pure (``ipaddress`` only, no DNS, no sockets): the edges resolve names (``orchestrator.webhooks``) and hand
the addresses here. A webhook target is refused when its address is not a public unicast address, i.e. when
it is unspecified, loopback, link-local (``169.254.0.0/16`` holds the cloud metadata service), private
(RFC 1918), shared (carrier-grade NAT), unique-local (``fc00::/7``), site-local, multicast or otherwise
reserved, unless the operator's allowlist (:class:`WebhookPolicy`, setting ``webhook_allow``) admits it.
IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4
``2002::/16``) are judged by the IPv4 address they carry.

The allowlist holds CIDRs or single addresses (``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``) and host names
(``hooks.internal``, or ``*.svc.cluster.local`` for every name under a domain). An allowed name is trusted
whatever it resolves to; an allowed network admits only the addresses inside it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from orchestrator.core.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
DEFAULT_PORTS = {"http": 80, "https": 443}
ALLOW_SETTING = "webhook_allow (RIPPLE_WEBHOOK_ALLOW)"

# Names every resolver answers with a loopback address (RFC 6761 and the usual /etc/hosts aliases).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# Order matters only for the reason given: the first range that holds the address names it.
_V4_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("100.64.0.0/10"), "shared (carrier-grade NAT)"),
    (_V4("224.0.0.0/4"), "multicast"),
)
_V6_RANGES: tuple[tuple[IPNetwork, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("fc00::/7"), "unique-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "reserved"),  # local-use NAT64 (RFC 8215)
)
_NAT64 = _V6("64:ff9b::/96")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")
_LOOSE_V4_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)\Z")


def refused_reason(ip: IPAddress) -> str | None:
    """Why a webhook may not be sent to ``ip`` (``"loopback"``, ``"private"``, ...), or None for a public
    unicast address. Addresses carrying an IPv4 address (mapped, NAT64, 6to4) are judged by it."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_v4(ip)
        if embedded is not None:
            reason = refused_reason(embedded)
            return None if reason is None else f"{reason}, as {embedded} inside an IPv6 address"
        ranges = _V6_RANGES
    else:
        ranges = _V4_RANGES
    plain = _unscoped(ip)
    for network, reason in ranges:
        if plain in network:
            return reason
    return None if plain.is_global else "reserved"


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if _unscoped(ip) in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _unscoped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        return ipaddress.IPv6Address(int(ip))
    return ip


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells without DNS, or None for a name.

    Besides the canonical forms (``10.0.0.1``, ``::1``, ``fe80::1%eth0``) this reads the numeric forms
    ``inet_aton`` (and so ``getaddrinfo``) accepts: ``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``0177.0.0.1``.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    return _loose_ipv4(host)


def _loose_ipv4(host: str) -> ipaddress.IPv4Address | None:
    parts = host.rstrip(".").split(".") if host else []
    if not 1 <= len(parts) <= 4 or not all(_LOOSE_V4_PART.match(p) for p in parts):
        return None
    values = []
    for part in parts:
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part.startswith("0"):
            if any(c in "89" for c in part):
                return None
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def normalize_host(host: str) -> str:
    """Lower case, without a trailing dot or IPv6 brackets: the form names are compared in."""
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL taken apart: ``host`` normalized (see :func:`normalize_host`), ``port`` explicit."""

    scheme: str
    host: str
    port: int


def parse_webhook_url(url: str) -> WebhookTarget:
    """Take a webhook URL apart, or raise ValueError saying what is wrong with it.

    Only ``http`` and ``https``, with a host and a port in 1..65535. Backslashes, spaces and control
    characters are refused: URL parsers disagree about them, and the host checked must be the host dialled.
    """
    if any(c == "\\" or c.isspace() or not c.isprintable() for c in url):
        raise ValueError("URL must not contain backslashes, spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"URL is not valid ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r} is not allowed (only http and https)")
    host = normalize_host(parts.hostname or "")
    if not host:
        raise ValueError("URL has no host")
    if port == 0:
        raise ValueError("URL port 0 is not a valid port")
    return WebhookTarget(scheme, host, port or DEFAULT_PORTS[scheme])


@dataclass(frozen=True)
class WebhookPolicy:
    """The operator's allowlist for webhook targets that would otherwise be refused.

    ``hosts``: exact host names; ``domains``: suffixes from ``*.example`` entries (``.example``);
    ``networks``: CIDRs. Build with :meth:`parse`. The empty policy refuses every non-public address.
    """

    hosts: frozenset[str] = frozenset()
    domains: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> WebhookPolicy:
        """Read allowlist entries (CIDRs, addresses, host names, ``*.domain``).

        Raises:
            ValueError: naming the first bad entry and what is wrong with it.
        """
        hosts: set[str] = set()
        domains: list[str] = []
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if "://" in entry:
                raise ValueError(f"entry {raw!r} is a URL: list its host name or address (or a CIDR)")
            if any(c in entry for c in "/:") or literal_address(entry) is not None:
                networks.append(_network(entry))
                continue
            wildcard = entry.startswith("*.")
            name = normalize_host(entry[2:] if wildcard else entry)
            if not name or not all(_HOST_LABEL.match(label) for label in name.split(".")):
                raise ValueError(
                    f"entry {raw!r} is neither an address, a CIDR (10.0.0.0/8, fd00::/8), a host name "
                    "nor '*.domain'"
                )
            if wildcard:
                domains.append("." + name)
            else:
                hosts.add(name)
        return cls(frozenset(hosts), tuple(domains), tuple(networks))

    def allows_host(self, host: str) -> bool:
        """``host`` (normalized) is allowed by name, whatever it resolves to."""
        return host in self.hosts or any(host.endswith(d) for d in self.domains)

    def allows_address(self, ip: IPAddress) -> bool:
        """``ip`` lies in an allowed network."""
        plain = _unscoped(ip)
        return any(plain.version == n.version and plain in n for n in self.networks)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why ``host``, resolved to ``ip``, is refused, or None when a webhook may go there."""
        if self.allows_host(host) or self.allows_address(ip):
            return None
        reason = refused_reason(ip)
        if reason is None:
            return None
        named = "" if literal_address(host) == ip else f"host {host!r} resolves to "
        return f"{named}{ip} is not an allowed webhook target ({reason}); {ALLOW_SETTING} can allow it"

    def host_refusal(self, target: WebhookTarget) -> str | None:
        """The check that needs no DNS: a literal address or a loopback name (``localhost``) is judged now.

        None means allowed, or a name that must still be resolved and checked with :meth:`refusal`."""
        if self.allows_host(target.host):
            return None
        ip = literal_address(target.host)
        if ip is not None:
            return self.refusal(target.host, ip)
        if target.host in LOOPBACK_NAMES or target.host.endswith(".localhost"):
            return (
                f"host {target.host!r} is not an allowed webhook target (loopback name); "
                f"{ALLOW_SETTING} can allow it"
            )
        return None

    def addresses_refusal(self, target: WebhookTarget, addresses: Iterable[IPAddress]) -> str | None:
        """Every address ``target.host`` resolved to must be allowed: the first refusal, or None."""
        for ip in addresses:
            reason = self.refusal(target.host, ip)
            if reason is not None:
                return reason
        return None


def _network(entry: str) -> IPNetwork:
    address, slash, prefix = entry.partition("/")
    ip = literal_address(address)
    if ip is None or (isinstance(ip, ipaddress.IPv6Address) and ip.scope_id):
        raise ValueError(f"entry {entry!r} is not an address or a CIDR (10.0.0.0/8, fd00::/8)")
    try:
        return ipaddress.ip_network(f"{ip}{slash}{prefix}", strict=True)
    except ValueError as exc:
        raise ValueError(f"entry {entry!r} is not a valid CIDR: {exc}") from None


@lru_cache(maxsize=16)
def policy_of(entries: tuple[str, ...]) -> WebhookPolicy:
    """The parsed policy of a (validated) allowlist, parsed once per process."""
    return WebhookPolicy.parse(entries)


def refusal_error(loc: Sequence[str | int], reason: str) -> InvalidInput:
    """The 422 of a refused webhook: ``invalid request: FIELD: why``, FIELD being ``loc`` without a leading
    ``body`` (``webhook``, ``jobs.3.webhook``); the detail lists ``loc``, the reason and its type."""
    path = [str(p) for p in loc]
    field = ".".join(path[1:] if path[:1] == ["body"] and len(path) > 1 else path)
    return InvalidInput(
        f"invalid request: {field}: {reason}", [{"loc": path, "msg": reason, "type": "webhook_refused"}]
    )


def check_literal_webhooks(urls: Sequence[str | None], policy: WebhookPolicy) -> None:
    """Refuse (InvalidInput, 422) the first webhook of ``urls`` (a submission's jobs, in order) whose host is
    a literal address or a loopback name ``policy`` does not admit; names need DNS and are checked at the
    edge (``orchestrator.webhooks``) and at delivery. The field is ``webhook``, or ``jobs.N.webhook`` when
    there are several jobs."""
    for index, url in enumerate(urls):
        if url is None:
            continue
        try:
            reason = policy.host_refusal(parse_webhook_url(url))
        except ValueError as exc:
            reason = str(exc)
        if reason is not None:
            raise refusal_error(["jobs", index, "webhook"] if len(urls) > 1 else ["webhook"], reason)
