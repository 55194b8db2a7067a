"""GPU types: what a node offers, how an endpoint's ``gpuTypes`` preference list picks one, and the
``ripple up --gpus A100=1,L4=1`` syntax. Pure: callers pass Ray's node resources in.

Ray marks a node with an accelerator with the resource ``accelerator_type:<TYPE>`` (auto-detected, always
1 on a real GPU node whatever its GPU count, or declared with ``ray start --resources``); an actor asks for
it with ``.options(accelerator_type=TYPE)``, which requests 0.001 of that resource (``ray/_common/utils.py``
``resources_from_ray_options``). So on a node of one type, every GPU is of that type and ``GPU`` counts
them. A node declaring several types (only ``ripple up --gpus`` does that: typed logical GPUs on one
machine) gives each type's count as the resource's value; a replica placed there asks for ``gpus`` units
of its type's resource, so Ray itself keeps the types apart (:func:`placement_options`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ACCELERATOR_PREFIX = "accelerator_type:"
MAX_GPU_TYPES = 8
GPU_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
_EPS = 1e-9


def resource_name(gpu_type: str) -> str:
    """Ray's resource for a GPU type: ``accelerator_type:<TYPE>``."""
    return f"{ACCELERATOR_PREFIX}{gpu_type}"


def validate_gpu_types(value: list[str] | None) -> list[str] | None:
    """An endpoint's ``gpuTypes``: None (any type) or 1..MAX_GPU_TYPES distinct type names.

    Raises ValueError echoing the bad value (the API maps it to 422 naming ``gpuTypes``).
    """
    if value is None:
        return None
    if not value:
        raise ValueError("must list at least one GPU type, or be null for any type")
    if len(value) > MAX_GPU_TYPES:
        raise ValueError(f"lists {len(value)} GPU types; at most {MAX_GPU_TYPES}")
    seen: set[str] = set()
    for t in value:
        if not isinstance(t, str) or not GPU_TYPE_RE.match(t):
            raise ValueError(
                f"{t!r} is not a GPU type name (letters, digits, '_', '.', '-'; at most 64 characters)"
            )
        if t in seen:
            raise ValueError(f"{t!r} is listed twice")
        seen.add(t)
    return list(value)


def parse_gpus_flag(text: str) -> dict[str, float]:
    """``"A100=1,L4=2"`` -> ``{"A100": 1.0, "L4": 2.0}`` (whole, positive counts; each type once).

    Raises ValueError with what is wrong and the expected form.
    """
    form = "expected TYPE=COUNT[,TYPE=COUNT...], e.g. A100=1,L4=1"
    out: dict[str, float] = {}
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise ValueError(f"--gpus {text!r}: {form}")
    for part in parts:
        name, sep, count = part.partition("=")
        name, count = name.strip(), count.strip()
        if not sep or not GPU_TYPE_RE.match(name):
            raise ValueError(f"--gpus {text!r}: {part!r} is not TYPE=COUNT; {form}")
        if name in out:
            raise ValueError(f"--gpus {text!r}: {name!r} is given twice")
        try:
            n = int(count)
        except ValueError:
            raise ValueError(
                f"--gpus {text!r}: the count of {name!r} ({count!r}) is not a whole number"
            ) from None
        if n < 1:
            raise ValueError(f"--gpus {text!r}: the count of {name!r} must be >= 1, not {n}")
        out[name] = float(n)
    if len(out) > MAX_GPU_TYPES:
        raise ValueError(f"--gpus {text!r}: at most {MAX_GPU_TYPES} types")
    return out


def head_resources(typed: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """``num_gpus`` and the extra resources of a head declaring ``typed`` logical GPUs."""
    return float(sum(typed.values())), {resource_name(t): float(n) for t, n in typed.items()}


def node_types(resources: Mapping[str, Any]) -> dict[str, float]:
    """GPUs of each type on one node, from its resources (total or available).

    One type: every GPU of the node is of that type. Several (typed logical GPUs): the declared values,
    each capped by the node's GPUs. No type: ``{}``.
    """
    gpus = float(resources.get("GPU", 0.0) or 0.0)
    types = {
        k[len(ACCELERATOR_PREFIX) :]: float(v)
        for k, v in resources.items()
        if k.startswith(ACCELERATOR_PREFIX)
    }
    if not types:
        return {}
    if len(types) == 1:
        return {next(iter(types)): gpus}
    return {t: min(gpus, max(0.0, v)) for t, v in sorted(types.items())}


def node_gpu_type(resources: Mapping[str, Any]) -> str | None:
    """The type a node reports (``/api/v1/specs``, a replica's ``gpuType``): its single type, else the
    first by name when it declares several, else None."""
    types = sorted(k[len(ACCELERATOR_PREFIX) :] for k in resources if k.startswith(ACCELERATOR_PREFIX))
    return types[0] if types else None


@dataclass(frozen=True)
class TypeCapacity:
    """GPUs of one type in the cluster: ``total`` on alive nodes, ``free`` now, ``largest_free`` on one
    node (what a single replica can get), and whether a node offering it declares several types."""

    total: float = 0.0
    free: float = 0.0
    largest_free: float = 0.0
    multi_typed: bool = False


def inventory(
    nodes: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]],
) -> dict[str, TypeCapacity]:
    """Per GPU type, over ``(total resources, available resources)`` of each alive node.

    On a node of several types, a type's free GPUs are its resource's available value (every replica
    placed there holds ``gpus`` units of it) capped by the node's free GPUs.
    """
    out: dict[str, TypeCapacity] = {}
    for total_res, avail_res in nodes:
        totals = node_types(total_res)
        if not totals:
            continue
        multi = len(totals) > 1
        free_gpus = float(avail_res.get("GPU", 0.0) or 0.0)
        for t, n in totals.items():
            free = min(free_gpus, float(avail_res.get(resource_name(t), 0.0) or 0.0)) if multi else free_gpus
            c = out.get(t, TypeCapacity())
            out[t] = TypeCapacity(
                total=c.total + n,
                free=c.free + free,
                largest_free=max(c.largest_free, free),
                multi_typed=c.multi_typed or multi,
            )
    return out


def pick_gpu_type(preferences: Iterable[str], capacity: Mapping[str, TypeCapacity], gpus: float) -> str:
    """The type a new replica asks for: the first preferred type with a node that has ``gpus`` free now;
    else the first that some node offers at all (the replica waits for it); else the first listed (a
    cluster that grows may add it). ``preferences`` must not be empty."""
    prefs = list(preferences)
    for t in prefs:
        c = capacity.get(t)
        if c is not None and c.largest_free + _EPS >= gpus:
            return t
    for t in prefs:
        c = capacity.get(t)
        if c is not None and c.total > 0:
            return t
    return prefs[0]


def placement_options(gpu_type: str, gpus: float, capacity: Mapping[str, TypeCapacity]) -> dict[str, Any]:
    """Ray actor options that pin a replica to ``gpu_type``.

    ``accelerator_type`` (Ray's 0.001 of the marker) on nodes of one type. Where a node offering the type
    declares several (typed logical GPUs), ``gpus`` units of the type's resource instead, so Ray keeps one
    type's GPUs from being taken by replicas of another. The caller adds ``num_gpus``.
    """
    c = capacity.get(gpu_type)
    if c is not None and c.multi_typed and gpus > 0:
        return {"resources": {resource_name(gpu_type): float(gpus)}}
    return {"accelerator_type": gpu_type}
