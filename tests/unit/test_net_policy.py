"""Where a webhook may go, decided without DNS: every refused range, the URL forms that hide an address, the
allowlist (parsed, validated at start-up, applied), and the request model refusing at submit."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.config import QueueConfig, load_settings
from orchestrator.core.errors import ConfigError, InvalidInput
from orchestrator.core.models import RunRequest
from orchestrator.core.net_policy import (
    WebhookPolicy,
    WebhookTarget,
    check_literal_webhooks,
    literal_address,
    parse_webhook_url,
    refused_reason,
)

pytestmark = pytest.mark.timeout(30)

STRICT = WebhookPolicy()

# (address, the reason it is refused): one or more per refused range.
REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared (carrier-grade NAT)"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.10", "reserved"),
    ("198.18.0.1", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "reserved"),
    ("64:ff9b:1::1", "reserved"),
    ("::ffff:127.0.0.1", "loopback, as 127.0.0.1 inside an IPv6 address"),
    ("::ffff:169.254.169.254", "link-local, as 169.254.169.254 inside an IPv6 address"),
    ("64:ff9b::a9fe:a9fe", "link-local, as 169.254.169.254 inside an IPv6 address"),
    ("2002:0a00:0001::1", "private, as 10.0.0.1 inside an IPv6 address"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111",
          "::ffff:8.8.8.8", "64:ff9b::808:808"]  # fmt: skip


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_each_refused_range_is_named(address: str, reason: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refused_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("169.254.43518", "169.254.169.254"),
        ("0", "0.0.0.0"),
    ],
)
def test_numeric_hosts_are_read_as_the_address_a_resolver_would_dial(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "0x1g", "a1", ""])
def test_names_are_not_addresses(host: str) -> None:
    assert literal_address(host) is None


# URLs ---------------------------------------------------------------------------------------------


def test_url_parts() -> None:
    assert parse_webhook_url("https://Hooks.Example./x?y=1") == WebhookTarget("https", "hooks.example", 443)
    assert parse_webhook_url("HTTP://[::1]:8080/") == WebhookTarget("http", "::1", 8080)
    assert parse_webhook_url("http://user:pw@h:81/") == WebhookTarget("http", "h", 81)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://example.com/", "scheme 'gopher'"),
        ("example.com/hook", "scheme ''"),
        ("http:///path", "no host"),
        ("http://example.com:99999/", "URL is not valid"),
        ("http://example.com:0/", "port 0"),
        ("http://[::1/", "URL is not valid"),
        ("http://evil.example\\@127.0.0.1/", "backslashes"),
        ("http://example.com /", "spaces"),
        ("http://example.com/\x00", "control"),
    ],
)
def test_bad_urls_say_why(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("\\", "\\\\")):
        parse_webhook_url(url)


# The policy without DNS ---------------------------------------------------------------------------


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_literal_targets_of_every_refused_range_are_refused(address: str, reason: str) -> None:
    host = f"[{address.replace('%', '%25')}]" if ":" in address else address
    refusal = STRICT.host_refusal(parse_webhook_url(f"http://{host}/hook"))
    assert refusal is not None and f"({reason})" in refusal and "RIPPLE_WEBHOOK_ALLOW" in refusal


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST.", "api.localhost", "localhost.localdomain", "ip6-localhost", "127.1"]
)
def test_loopback_names_and_numeric_forms_are_refused(host: str) -> None:
    assert STRICT.host_refusal(parse_webhook_url(f"http://{host}:9000/")) is not None


@pytest.mark.parametrize("host", ["example.com", "8.8.8.8", "[2606:4700:4700::1111]", "localhost.example"])
def test_public_and_unresolved_names_pass_the_pure_check(host: str) -> None:
    assert STRICT.host_refusal(parse_webhook_url(f"https://{host}/")) is None


def test_resolved_addresses_are_all_checked() -> None:
    target = parse_webhook_url("https://hooks.example/")
    public, private = ipaddress.ip_address("93.184.216.34"), ipaddress.ip_address("10.9.8.7")
    assert STRICT.addresses_refusal(target, [public]) is None
    refusal = STRICT.addresses_refusal(target, [public, private])
    assert (
        refusal is not None and "'hooks.example' resolves to 10.9.8.7" in refusal and "(private)" in refusal
    )


# The allowlist ------------------------------------------------------------------------------------


def test_allowlist_entries_are_parsed() -> None:
    policy = WebhookPolicy.parse(
        [" 10.0.0.0/8", "127.0.0.1", "fd00::/8", "Hooks.Internal.", "*.svc.cluster.local", "", "::1"]
    )
    assert policy.hosts == frozenset({"hooks.internal"})
    assert policy.domains == (".svc.cluster.local",)
    assert [str(n) for n in policy.networks] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8", "::1/128"]


def test_allowlist_admits_what_it_lists_and_nothing_else() -> None:
    policy = WebhookPolicy.parse(["10.0.0.0/8", "127.0.0.1", "hooks.internal", "*.svc.cluster.local"])

    def refused(url: str) -> bool:
        return policy.host_refusal(parse_webhook_url(url)) is not None

    assert not refused("http://10.20.30.40/") and not refused("http://127.0.0.1:8080/")
    assert refused("http://127.0.0.2/"), "only the listed address, not its range"
    assert refused("http://169.254.169.254/") and refused("http://192.168.0.1/") and refused("http://[::1]/")
    assert refused("http://localhost/"), "a loopback name is not its address"
    target = parse_webhook_url("http://hooks.internal/")
    assert policy.addresses_refusal(target, [ipaddress.ip_address("192.168.9.9")]) is None, "trusted by name"
    svc = parse_webhook_url("http://api.team.svc.cluster.local/")
    assert policy.addresses_refusal(svc, [ipaddress.ip_address("172.20.0.5")]) is None
    bare = parse_webhook_url("http://svc.cluster.local/")
    assert policy.addresses_refusal(bare, [ipaddress.ip_address("172.20.0.5")]) is not None, (
        "only names under"
    )
    other = parse_webhook_url("http://other.example/")
    assert policy.addresses_refusal(other, [ipaddress.ip_address("10.1.1.1")]) is None, "in an allowed CIDR"
    assert policy.addresses_refusal(other, [ipaddress.ip_address("172.16.1.1")]) is not None


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("10.0.0.1/8", "host bits set"),
        ("10.0.0.0/33", "not a valid CIDR"),
        ("http://hooks.internal", "is a URL"),
        ("hooks internal", "neither an address"),
        ("-bad-.example", "neither an address"),
        ("*.", "neither an address"),
        ("fe80::1%eth0", "not an address or a CIDR"),
        ("host:8080", "not an address or a CIDR"),
    ],
)
def test_bad_allowlist_entries_are_named(entry: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as err:
        WebhookPolicy.parse(["10.0.0.0/8", entry])
    assert repr(entry) in str(err.value)


# The request model and the queue's check --------------------------------------------------------------


def run_request(webhook: str) -> RunRequest:
    return RunRequest.model_validate({"input": 1, "webhook": webhook})


def test_the_request_model_judges_the_url_shape() -> None:
    assert run_request("https://hooks.example/x").webhook == "https://hooks.example/x"
    assert run_request("http://10.0.0.1/").webhook == "http://10.0.0.1/", (
        "where it points: the queue's policy"
    )
    with pytest.raises(ValidationError, match="URL has no host"):
        run_request("http://")
    with pytest.raises(ValidationError, match="backslashes"):
        run_request("http://a.example\\@10.0.0.1/")
    with pytest.raises(ValidationError, match="URL is not valid"):
        run_request("http://a.example:70000/")


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_the_queue_refuses_each_range_naming_the_field_and_why(address: str, reason: str) -> None:
    host = f"[{address.replace('%', '%25')}]" if ":" in address else address
    with pytest.raises(InvalidInput) as err:
        check_literal_webhooks([run_request(f"https://{host}/hook").webhook], STRICT)
    assert err.value.status_code == 422 and err.value.message.startswith("invalid request: webhook: ")
    assert f"({reason})" in err.value.message


def test_the_queue_admits_what_the_allowlist_lists() -> None:
    allow = WebhookPolicy.parse(["127.0.0.0/8"])
    check_literal_webhooks(["http://127.0.0.1:9/h", None], allow)
    with pytest.raises(InvalidInput, match="link-local"):
        check_literal_webhooks(["http://169.254.169.254/latest/meta-data/"], allow)


def test_a_submission_is_refused_at_its_first_refused_literal_naming_the_job() -> None:
    check_literal_webhooks([None, "https://hooks.example/", "http://8.8.8.8/"], STRICT)
    with pytest.raises(InvalidInput) as err:
        check_literal_webhooks(["http://169.254.169.254/"], STRICT)
    assert err.value.message.startswith("invalid request: webhook: 169.254.169.254 is not an allowed")
    assert err.value.detail == [
        {"loc": ["webhook"], "msg": err.value.detail[0]["msg"], "type": "webhook_refused"}
    ]
    with pytest.raises(InvalidInput, match=r"^invalid request: jobs\.2\.webhook: .*\(loopback name\)"):
        check_literal_webhooks(
            [None, "https://hooks.example/", "http://localhost/", "http://10.0.0.1/"], STRICT
        )
    check_literal_webhooks(["http://127.0.0.1:8000/"], WebhookPolicy.parse(["127.0.0.1"]))


# The setting ----------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("RIPPLE_", "_RIPPLE_")):
            monkeypatch.delenv(name)
    yield


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    "value",
    ["127.0.0.1, 10.0.0.0/8,hooks.internal", '["127.0.0.1", "10.0.0.0/8", "hooks.internal"]'],
)
def test_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RIPPLE_WEBHOOK_ALLOW", value)
    settings = load_settings()
    assert settings.webhook_allow == ["127.0.0.1", "10.0.0.0/8", "hooks.internal"]
    assert QueueConfig.from_settings(settings, "redis://x").webhook_allow == tuple(settings.webhook_allow)


@pytest.mark.usefixtures("clean_env")
def test_setting_defaults_to_nothing_allowed_and_reads_a_yaml_list(tmp_path: Path) -> None:
    assert load_settings().webhook_allow == []
    assert QueueConfig(redis_url="redis://x").webhook_allow == ()
    path = tmp_path / "ripple.yaml"
    path.write_text("webhook_allow:\n  - 127.0.0.1\n  - '*.svc.cluster.local'\n")
    assert load_settings(path).webhook_allow == ["127.0.0.1", "*.svc.cluster.local"]


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("value", "named"),
    [("127.0.0.1,10.0.0.1/8", "'10.0.0.1/8'"), ("https://hooks.example", "'https://hooks.example'"),
     ("[not json", "JSON list")],
)  # fmt: skip
def test_bad_setting_stops_start_up_naming_the_entry(
    monkeypatch: pytest.MonkeyPatch, value: str, named: str
) -> None:
    monkeypatch.setenv("RIPPLE_WEBHOOK_ALLOW", value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "webhook_allow (RIPPLE_WEBHOOK_ALLOW)" in str(err.value) and named in str(err.value)


def test_settings_flag_accepts_a_list(clean_env: Any) -> None:
    assert load_settings(webhook_allow=["fd00::/8"]).webhook_allow == ["fd00::/8"]
