"""The entry point of ``ripple doctor``'s rules: every finding for the gathered facts, most severe first."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from orchestrator.ops.doctor import rules as r
from orchestrator.ops.doctor import rules_app as app
from orchestrator.ops.doctor import rules_k8s as k8s
from orchestrator.ops.doctor.facts import ORDER, Facts, Finding

_APP_RULES: list[Callable[[Facts, float], list[Finding]]] = [
    app.check_reachable,
    app.check_ready,
    app.check_config,
    app.check_store_memory,
    app.check_unavailable,
    k8s.check_kubernetes,  # also when the app is down: pods may be why
]


def _rules() -> list[Callable[[Facts, float], list[Finding]]]:
    return [
        *_APP_RULES,
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
        if not (facts.reachable and facts.ready is not False) and rule not in _APP_RULES:
            continue
        out += rule(facts, now_s)
    return sorted(out, key=lambda x: (ORDER[x.severity], x.category, x.rule))


def exit_code(findings: Sequence[Finding]) -> int:
    """1 when anything is HIGH, else 0."""
    return 1 if any(x.severity == "HIGH" for x in findings) else 0
