"""The rules of ``ripple doctor``: pure functions from gathered facts to prioritised findings.

:func:`~orchestrator.ops.doctor.diagnose.diagnose` takes :class:`Facts` (what
:mod:`orchestrator.ops.doctor.report` read over HTTP and from the data dir) and the clock, and returns
:class:`Finding` values, most severe first. Each finding says what is wrong and the action that fixes it. HIGH
means Ripple cannot do its job for someone right now (``doctor`` exits non-zero); MEDIUM degrades it or will
soon; LOW is advice. No I/O, no clock, no Ray or Redis here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from orchestrator.ops.doctor.facts_k8s import KubeFacts

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
    store_memory: Mapping[str, Any] | None = None  # /health/ready's storeMemory: usedBytes, maxBytes, policy
    cluster: Mapping[str, Any] | None = None
    endpoints: Sequence[Mapping[str, Any]] = ()
    workers: Sequence[Mapping[str, Any]] = ()
    stats: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    autoscaler: Mapping[str, Any] | None = None
    jobs_in_progress: Sequence[Mapping[str, Any]] = ()
    local: LocalFacts | None = None
    errors: Mapping[str, str] = field(default_factory=dict)
    thresholds: Thresholds = Thresholds()
    kubernetes: KubeFacts | None = None  # None: not running inside a Kubernetes pod


def mask(value: str | None, keep: int = 4) -> str | None:
    """A secret shown by its first characters only."""
    if not value:
        return value
    return value[:keep] + "…" if len(value) > keep else "…"


def _f(sev: Severity, cat: str, rule: str, issue: str, action: str, detail: Any = None) -> Finding:
    return Finding(sev, cat, issue, action, detail, rule)


def _age_s(now_s: float, ms: Any) -> float | None:
    return None if not ms else now_s - float(ms) / 1000


# Configuration and store ------------------------------------------------------------------------------
