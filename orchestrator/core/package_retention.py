"""Which code packages stay in the Ray cluster: those a version may still run or roll back to. Pure.

A package ``ripple deploy`` uploads is recorded with the time it arrived (the queue records it before the
upload). It is kept while a *kept* version names it in its ``runtimeEnv`` (``working_dir`` or
``py_modules``), and for a grace after it arrived (``RIPPLE_PACKAGE_GRACE_S``, default
:data:`UNREFERENCED_GRACE_S`: a deploy uploads its package, then creates the version naming it). An
endpoint's kept versions are its latest ``keep_versions`` (``RIPPLE_KEEP_VERSIONS``), and always the version
serving now and one rolling out. Every other recorded package is deleted (:func:`to_delete`); the versions
that named it then say so (``codeDeletedAt``), and a rollback to one of them is refused with the reason
(:func:`orchestrator.core.versions.rollback_target`). Packages not recorded (put in the cluster by other
means) are never deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestrator.core.packages import RAY_PKG_PREFIX
from orchestrator.core.versions import EndpointVersion

UNREFERENCED_GRACE_S = 3600.0
"""How long a recorded package no kept version names is kept after it arrived: a deploy in progress."""

DEFAULT_KEEP_VERSIONS = 10

_PACKAGE_SCHEME = f"gcs://{RAY_PKG_PREFIX}"


def package_uris(runtime_env: Mapping[str, Any] | None) -> set[str]:
    """The code packages (``gcs://_ray_pkg_...``) a runtime env names in ``working_dir`` or ``py_modules``."""
    if not runtime_env:
        return set()
    named: list[Any] = [runtime_env.get("working_dir")]
    modules = runtime_env.get("py_modules")
    if isinstance(modules, list):
        named.extend(modules)
    return {u for u in named if isinstance(u, str) and u.startswith(_PACKAGE_SCHEME)}


def kept_versions(versions: Sequence[EndpointVersion], keep_versions: int) -> list[EndpointVersion]:
    """The versions of one endpoint whose code is kept: the latest ``keep_versions`` (at least 1), and
    any ``active`` or ``rolling_out`` one."""
    latest = sorted(versions, key=lambda v: v.version, reverse=True)[: max(1, keep_versions)]
    numbers = {v.version for v in latest}
    return [v for v in versions if v.version in numbers or v.state in ("active", "rolling_out")]


def referenced(versions_by_endpoint: Mapping[str, Sequence[EndpointVersion]], keep_versions: int) -> set[str]:
    """Every package a kept version of any endpoint names."""
    out: set[str] = set()
    for versions in versions_by_endpoint.values():
        for v in kept_versions(versions, keep_versions):
            out |= package_uris(v.runtime_env)
    return out


def to_delete(
    arrived_ms: Mapping[str, int],
    versions_by_endpoint: Mapping[str, Sequence[EndpointVersion]],
    keep_versions: int,
    now_ms: int,
    grace_s: float = UNREFERENCED_GRACE_S,
) -> list[str]:
    """The recorded packages (``arrived_ms``: URI -> when it last arrived) to delete now, sorted: no kept
    version names them and they arrived over ``grace_s`` ago."""
    keep = referenced(versions_by_endpoint, keep_versions)
    cutoff_ms = now_ms - int(grace_s * 1000)
    return sorted(uri for uri, at_ms in arrived_ms.items() if uri not in keep and at_ms <= cutoff_ms)


def naming(versions: Iterable[EndpointVersion], uris: set[str]) -> list[EndpointVersion]:
    """The versions that name one of ``uris`` and do not say yet that their code was deleted."""
    return [v for v in versions if v.code_deleted_ms is None and package_uris(v.runtime_env) & uris]
