"""Endpoint versions: every change to what runs is an immutable, numbered version. Pure.

What runs is the endpoint's *runtime fields* (:data:`RUNTIME_FIELDS`: code digest, handler, runtime env,
GPUs and GPU types, CPUs, memory, concurrency). Changing one of them creates a version (1, 2, ...);
scaling fields (min/max replicas, thresholds, cooldowns, priority, timeouts, retries) apply in place
without one. The endpoint's spec carries the latest version's number in ``version``: what its pool should
run. The pool rolls replicas over to it and reports the outcome (:func:`set_state`):

    rolling_out ──pool: new replicas serve──▶ active ──a later version becomes active──▶ retired
         │                                       (the earlier active one is retired then)
         ├──pool: replicas fail to start / load──▶ failed (with ``error``)
         └──a later version is created before this one became active──▶ retired (superseded)

A version is never edited otherwise: a rollback creates a new version whose runtime fields equal an
earlier one's (:func:`rollback_target`, :func:`apply_version`).

Wire form (``GET /api/v1/endpoints/{name}/versions``): camelCase, ``createdAt`` in ms since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from orchestrator.core.errors import Conflict, NotFound

if TYPE_CHECKING:
    from orchestrator.core.models import EndpointSpec

VersionState = Literal["rolling_out", "active", "failed", "retired"]
VERSION_STATES: tuple[VersionState, ...] = ("rolling_out", "active", "failed", "retired")

RUNTIME_ATTRS: tuple[str, ...] = (
    "code_digest",
    "handler",
    "runtime_env",
    "gpus",
    "gpu_types",
    "cpus",
    "memory_mb",
    "concurrency",
)
"""The EndpointSpec attributes (snake_case) whose change creates a version."""

RUNTIME_FIELDS: tuple[str, ...] = tuple(to_camel(a) for a in RUNTIME_ATTRS)
"""The same fields as the API spells them (camelCase): what ``changed`` lists. ``codeDigest`` is the
code: the digest of the package ``ripple deploy`` uploaded."""

MAX_ERROR_CHARS = 4000

VERSION_RECORDS_KEPT = 100
"""How many of an endpoint's versions keep their record (``ripple versions``, ``rollback --to N``, the
version a job ran): the latest, and any active or rolling out. A new version deletes the oldest record
beyond. Their code packages go sooner (``RIPPLE_KEEP_VERSIONS``)."""

# state -> the states a pool report may move it to (a report of the state it is in is a no-op)
_REPORTABLE: dict[str, frozenset[str]] = {
    "rolling_out": frozenset({"active", "failed", "retired"}),
    "active": frozenset({"retired", "failed"}),
    "failed": frozenset({"retired"}),
    "retired": frozenset(),
}


class EndpointVersion(BaseModel):
    """One immutable version of an endpoint: its runtime fields, when it was made, what changed, its state.

    ``changed`` lists the :data:`RUNTIME_FIELDS` (camelCase) that differ from the previous version (empty
    for version 1). ``error`` is set when the version failed (why its replicas could not start or load).
    ``activated_ms`` is when it first became active (None if it never did): a rollback's default target is
    the version active before the current one. ``code_deleted_ms`` is when its code package was deleted from
    the cluster (:mod:`orchestrator.core.package_retention`; None while it is kept): it cannot run again.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    version: int = Field(ge=1)
    created_ms: int = Field(alias="createdAt", ge=0)
    handler: str | None = None
    runtime_env: dict[str, Any] | None = None
    gpus: float = 1.0
    gpu_types: tuple[str, ...] | None = None
    cpus: float = 0.25
    memory_mb: int | None = None
    concurrency: int = 1
    code_digest: str | None = None
    changed: tuple[str, ...] = ()
    state: VersionState = "rolling_out"
    error: str | None = None
    activated_ms: int | None = Field(default=None, alias="activatedAt")
    code_deleted_ms: int | None = Field(default=None, alias="codeDeletedAt")

    def wire(self) -> dict[str, Any]:
        """The JSON form with camelCase keys (``createdAt``/``activatedAt`` in ms)."""
        return self.model_dump(mode="json", by_alias=True)

    def runtime(self) -> dict[str, Any]:
        """This version's runtime fields by attribute name (as :class:`EndpointSpec` takes them)."""
        out = {a: getattr(self, a) for a in RUNTIME_ATTRS}
        if out["gpu_types"] is not None:
            out["gpu_types"] = list(out["gpu_types"])
        return out


def runtime_of(spec: EndpointSpec) -> dict[str, Any]:
    """A spec's runtime fields by attribute name, normalised for comparison (``gpu_types`` as a list)."""
    out = {a: getattr(spec, a) for a in RUNTIME_ATTRS}
    if out["gpu_types"] is not None:
        out["gpu_types"] = list(out["gpu_types"])
    return out


def changed_fields(before: EndpointSpec | None, after: EndpointSpec) -> tuple[str, ...]:
    """The :data:`RUNTIME_FIELDS` (camelCase) whose values differ between two specs (all of them when
    ``before`` is None). New code from ``ripple deploy`` is ``codeDigest`` alone: its package URI in
    ``runtimeEnv.working_dir`` moves with the digest, so ``runtimeEnv`` is listed only when something else in
    it changed (its ``pip`` requirements, its variables) or when the digest stayed."""
    if before is None:
        return RUNTIME_FIELDS
    a, b = runtime_of(before), runtime_of(after)
    changed = [k for k in RUNTIME_ATTRS if a[k] != b[k]]
    if "code_digest" in changed and "runtime_env" in changed and _without_code(a) == _without_code(b):
        changed.remove("runtime_env")
    return tuple(to_camel(k) for k in changed)


def _without_code(runtime: dict[str, Any]) -> dict[str, Any]:
    env = runtime["runtime_env"] or {}
    return {k: v for k, v in env.items() if k != "working_dir"}


def latest(versions: Sequence[EndpointVersion]) -> EndpointVersion | None:
    """The highest-numbered version (None when there is none)."""
    return max(versions, key=lambda v: v.version, default=None)


def active_version(versions: Sequence[EndpointVersion]) -> EndpointVersion | None:
    """The version serving now: the highest-numbered ``active`` one (None before any became active)."""
    return max((v for v in versions if v.state == "active"), key=lambda v: v.version, default=None)


def find(versions: Sequence[EndpointVersion], number: int) -> EndpointVersion:
    """Version ``number``; raises NotFound naming it (and, for one that existed, why it is gone: versions are
    numbered from 1 without a gap)."""
    for v in versions:
        if v.version == number:
            return v
    top = max((v.version for v in versions), default=0)
    why = (
        f": an endpoint keeps the records of its latest {VERSION_RECORDS_KEPT} versions"
        if 0 < number < top
        else ""
    )
    raise NotFound(f"version {number} not found{why}", {"version": number})


def next_version(
    spec_before: EndpointSpec | None,
    spec_after: EndpointSpec,
    versions: Sequence[EndpointVersion],
    now_ms: int,
) -> EndpointVersion | None:
    """The version a change from ``spec_before`` to ``spec_after`` creates, or None when no runtime field
    changed (a scaling change applies in place).

    ``spec_before`` is None for a new endpoint: version 1, ``changed`` empty. Otherwise the new version is
    numbered one above the highest in ``versions``, lists the changed runtime fields and starts
    ``rolling_out``. The caller stores it and sets ``spec_after.version`` to its number.
    """
    top = latest(versions)
    number = (top.version + 1) if top is not None else 1
    if spec_before is None:
        changed: tuple[str, ...] = ()
    else:
        changed = changed_fields(spec_before, spec_after)
        if not changed:
            return None
    fields = runtime_of(spec_after)
    if fields["gpu_types"] is not None:
        fields["gpu_types"] = tuple(fields["gpu_types"])
    fields.update(version=number, created_ms=now_ms, changed=changed, state="rolling_out")
    return EndpointVersion.model_validate(fields)


def add_version(versions: Sequence[EndpointVersion], new: EndpointVersion) -> list[EndpointVersion]:
    """``versions`` with ``new`` appended; versions still ``rolling_out`` are superseded (``retired``):
    only the newest version is ever rolled out."""
    out = [v.model_copy(update={"state": "retired"}) if v.state == "rolling_out" else v for v in versions]
    out.append(new)
    return sorted(out, key=lambda v: v.version)


def set_state(
    versions: Sequence[EndpointVersion],
    number: int,
    state: VersionState,
    error: str | None,
    now_ms: int,
) -> list[EndpointVersion]:
    """Apply a pool's report that version ``number`` is now ``state`` (with ``error`` when failed).

    Becoming ``active`` retires every other active version and records ``activated_ms``. Reporting the
    state a version is already in is a no-op (a report may be repeated). Raises NotFound for an unknown
    version and Conflict for a move the lifecycle does not allow (a retired version never comes back; a
    rollback is a new version).
    """
    current = find(versions, number)
    if state not in VERSION_STATES:
        raise Conflict(f"unknown version state {state!r}", {"state": state})
    if current.state == state:
        return list(versions)
    if state not in _REPORTABLE[current.state]:
        raise Conflict(
            f"version {number} is {current.state} and cannot become {state}",
            {"version": number, "state": current.state, "requested": state},
        )
    out: list[EndpointVersion] = []
    for v in versions:
        if v.version == number:
            update: dict[str, Any] = {"state": state}
            if state == "failed":
                update["error"] = (error or "failed")[:MAX_ERROR_CHARS]
            if state == "active":
                update["activated_ms"] = now_ms
            out.append(v.model_copy(update=update))
        elif state == "active" and v.state == "active":
            out.append(v.model_copy(update={"state": "retired"}))
        else:
            out.append(v)
    return out


def rollback_target(versions: Sequence[EndpointVersion], to: int | None) -> EndpointVersion:
    """The version a rollback returns to: ``to`` when given (NotFound when unknown), else the previous
    good one: the active version when the newest is not active (a failed or unfinished rollout), otherwise
    the version that was active before it. Raises Conflict when there is none, or when the target's code
    package was deleted."""
    if to is not None:
        return _runnable(find(versions, to))
    top = latest(versions)
    serving = active_version(versions)
    if top is not None and serving is not None and top.version != serving.version:
        return serving
    earlier = [
        v for v in versions if v.activated_ms is not None and (serving is None or v.version < serving.version)
    ]
    if not earlier:
        others = "" if len(versions) < 2 else f"; give one of the {len(versions)} versions with --to N"
        raise Conflict(
            f"no earlier version was ever active to roll back to{others}", {"versions": len(versions)}
        )
    return _runnable(max(earlier, key=lambda v: v.version))


def _runnable(version: EndpointVersion) -> EndpointVersion:
    """``version``, or Conflict when its code package was deleted (it could not start)."""
    if version.code_deleted_ms is not None:
        raise Conflict(
            f"version {version.version}'s code package was deleted from the cluster: only each endpoint's "
            "latest versions keep theirs (RIPPLE_KEEP_VERSIONS); deploy that code again with `ripple deploy`",
            {"version": version.version, "codeDeletedAt": version.code_deleted_ms},
        )
    return version


def apply_version(spec: EndpointSpec, version: EndpointVersion) -> EndpointSpec:
    """``spec`` with the runtime fields of ``version`` (its scaling fields kept), validated as a whole."""
    merged = spec.model_dump()
    merged.update(version.runtime())
    return type(spec).model_validate(merged)
