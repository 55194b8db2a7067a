"""The rules of ``ripple doctor``: pure functions from gathered facts to prioritised findings.

:func:`diagnose` takes :class:`Facts` (what :mod:`orchestrator.doctor` read over HTTP and from the data dir)
and the clock, and returns :class:`Finding` values, most severe first. Each finding says what is wrong and
the action that fixes it. HIGH means Ripple cannot do its job for someone right now (``doctor`` exits
non-zero); MEDIUM degrades it or will soon; LOW is advice. No I/O, no clock, no Ray or Redis here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

Severity = Literal["HIGH", "MEDIUM", "LOW"]
ORDER: dict[str, int] = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, where, what is wrong, what to do; ``rule`` names the check that found it."""

    severity: Severity
    category: str
    issue: str
    action: str
    detail: Any = None
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LocalFacts:
    """What the data dir says. ``keys_mode``: permission bits of keys.json (None: no file)."""

    data_dir: str
    data_dir_exists: bool = True
    keys_path: str | None = None
    keys_mode: int | None = None
    api_key_known: bool = True
    redis_appendonly: bool | None = None  # None: no embedded redis.conf
    redis_pid: int | None = None
    redis_alive: bool | None = None
    state_file: bool = False
    client_version: str = ""


@dataclass(frozen=True)
class Thresholds:
    """When a condition becomes a finding (seconds)."""

    heartbeat_timeout_s: float = 60.0
    stuck_starting_s: float = 300.0
    old_queue_s: float = 600.0
    timeout_grace_s: float = 1.0
    repeated_failures: int = 3


@dataclass(frozen=True)
class Facts:
    """Everything doctor gathered; ``None`` / empty where it could not be read (``errors`` says why)."""

    url: str
    reachable: bool
    http_error: str | None = None
    ready: bool | None = None
    ready_detail: str | None = None
    info: Mapping[str, Any] | None = None
    cluster: Mapping[str, Any] | None = None
    endpoints: Sequence[Mapping[str, Any]] = ()
    workers: Sequence[Mapping[str, Any]] = ()
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    autoscaler: Mapping[str, Any] | None = None
    jobs_in_progress: Sequence[Mapping[str, Any]] = ()
    local: LocalFacts | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()


def mask(value: str | None, keep: int = 4) -> str | None:
    """A secret shown by its first characters only."""
    if not value:
        return value
    return value[:keep] + "…" if len(value) > keep else "…"


def mask_url(url: str | None) -> str | None:
    """A URL with its password (and user name) replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = "***@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _f(sev: Severity, cat: str, rule: str, issue: str, action: str, detail: Any = None) -> Finding:
    return Finding(sev, cat, issue, action, detail, rule)


def _live(w: Mapping[str, Any]) -> bool:
    return w.get("state") != "stopped"


def _age_s(now_s: float, ms: Any) -> float | None:
    return None if not ms else now_s - float(ms) / 1000


# Configuration and store ------------------------------------------------------------------------------


def check_reachable(f: Facts, now_s: float) -> list[Finding]:
    if f.reachable:
        return []
    local = f.local
    hint = (
        "a state file says it runs there, so it probably crashed: `ripple down` then `ripple up`"
        if local and local.state_file
        else "start it with `ripple up` (or `ripple up --detach`)"
    )
    return [
        _f(
            "HIGH",
            "configuration",
            "config.unreachable",
            f"Ripple is not reachable at {f.url} ({f.http_error or 'no answer'})",
            f"{hint[0].upper()}{hint[1:]}; or point doctor at the right instance with --url / RIPPLE_URL.",
        )
    ]


def check_ready(f: Facts, now_s: float) -> list[Finding]:
    if not f.reachable or f.ready is not False:
        return []
    local = f.local
    store = (f.info or {}).get("store")
    if local is not None and local.redis_pid is not None and local.redis_alive is False:
        action = (
            f"The embedded Redis (pid {local.redis_pid} in {local.data_dir}/redis.pid) is not running: "
            "restart Ripple with `ripple down` then `ripple up`; acknowledged jobs are kept in ripple.aof."
        )
    elif store == "external":
        action = "Check that the Redis of RIPPLE_REDIS_URL is up and reachable from the Ray head, then retry."
    else:
        action = (
            "The store or the ripple-queue actor does not answer: check the embedded Redis "
            "(redis.log in the data dir) and the queue actor's logs in the Ray dashboard; "
            "`ripple down` then `ripple up` restarts both."
        )
    return [
        _f(
            "HIGH",
            "store",
            "store.unreachable",
            f"Ripple is not ready: the job store (Redis) or the queue does not answer ({f.ready_detail})",
            action,
        )
    ]


def check_config(f: Facts, now_s: float) -> list[Finding]:
    out: list[Finding] = []
    info, local = f.info or {}, f.local
    if info.get("auth") is False:
        out.append(
            _f(
                "MEDIUM",
                "configuration",
                "config.auth_off",
                "Authentication is off (--insecure): anyone who can reach the port can submit and manage",
                "Restart without --insecure before exposing the port beyond this machine.",
            )
        )
    if local is not None:
        if info.get("auth") and not local.api_key_known:
            out.append(
                _f(
                    "HIGH",
                    "configuration",
                    "config.keys_missing",
                    "Auth is on but no API key is available here (RIPPLE_API_KEY unset, no keys.json)",
                    "Set RIPPLE_API_KEY, or run doctor with the instance's --data-dir (its keys.json).",
                )
            )
        if local.keys_mode is not None and local.keys_mode & 0o077:
            out.append(
                _f(
                    "HIGH",
                    "configuration",
                    "config.keys_mode",
                    f"{local.keys_path} is readable by others (mode {local.keys_mode:04o})",
                    f"chmod 600 {local.keys_path}",
                )
            )
        if local.redis_appendonly is False:
            out.append(
                _f(
                    "MEDIUM",
                    "store",
                    "store.not_persistent",
                    "The embedded Redis runs without append-only persistence: a crash loses accepted jobs",
                    f"Set `appendonly yes` in {local.data_dir}/redis.conf (Ripple writes it so) and restart.",
                )
            )
        server_version = info.get("version")
        if server_version and local.client_version and server_version != local.client_version:
            out.append(
                _f(
                    "LOW",
                    "configuration",
                    "config.version_mismatch",
                    f"The CLI is version {local.client_version}, the server {server_version}",
                    "Upgrade the older side so both run the same version.",
                )
            )
    if info.get("store") == "external":
        out.append(
            _f(
                "LOW",
                "store",
                "store.external",
                "The job store is an external Redis: its durability is its own configuration",
                "Make sure it runs with `appendonly yes` and is backed up.",
            )
        )
    return out


def check_unavailable(f: Facts, now_s: float) -> list[Finding]:
    """Facts the app could not give although it answers (an actor down, a route failing)."""
    if not f.reachable or f.ready is False:
        return []
    if any(why.startswith("401") for why in f.errors.values()):
        return [
            _f(
                "HIGH",
                "configuration",
                "config.unauthorized",
                "Ripple refused this CLI's API key (401)",
                "Use the instance's key: run doctor with its --data-dir (keys.json) or set RIPPLE_API_KEY.",
            )
        ]
    return [
        _f(
            "HIGH" if what in ("autoscaler", "workers", "stats") else "MEDIUM",
            "autoscaler" if what == "autoscaler" else "store",
            f"facts.{what}",
            f"Could not read {what} from Ripple: {why}",
            "Check the ripple-queue / ripple-autoscaler actors in the Ray dashboard (`ray list actors`);"
            " they restart on their own, `ripple down` then `ripple up` restarts everything.",
        )
        for what, why in sorted(f.errors.items())
        if what != "cluster"
    ]


# The entry point ----------------------------------------------------------------------------------------


def _rules() -> list[Callable[[Facts, float], list[Finding]]]:
    from orchestrator import diagnose_rules as r

    return [
        check_reachable,
        check_ready,
        check_config,
        check_unavailable,
        r.check_cluster,
        r.check_workers,
        r.check_jobs,
        r.check_autoscaler,
    ]


def diagnose(facts: Facts, now_s: float) -> list[Finding]:
    """Every finding for ``facts`` at ``now_s`` (seconds since the epoch), most severe first.

    When the app is unreachable or not ready only the configuration and store checks run: the other facts
    are missing, and their absence is not a finding of its own.
    """
    out: list[Finding] = []
    for rule in _rules():
        if not (facts.reachable and facts.ready is not False) and rule.__module__ != __name__:
            continue
        out += rule(facts, now_s)
    return sorted(out, key=lambda x: (ORDER[x.severity], x.category, x.rule))


def exit_code(findings: Sequence[Finding]) -> int:
    """1 when anything is HIGH, else 0."""
    return 1 if any(x.severity == "HIGH" for x in findings) else 0
