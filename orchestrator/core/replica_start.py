"""Where a created replica stands before its process runs: waiting for resources, or being set up.

Ray shows an actor that has no process yet the same way in two different cases (``PENDING_CREATION``, no
pid): when no node has its resources free (its lease waits, and the cluster's pending resource demand holds
its shape), and when a node has granted them and is preparing its worker process: installing its runtime
environment (pip packages take minutes for large ones on a node's first start), downloading its code,
starting the process. The two mean opposite things. A replica being set up holds its GPUs (Ray counts them
as used), and nothing is missing. A replica waiting for resources holds none, and capacity is missing.

They are told apart by the cluster's pending demand. A replica is waiting when some pending request asks
for a resource it asks for too, so it may be that one. Otherwise it is being set up. When the demand is
unknown, it counts as waiting, as before this distinction existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any


class Start(Enum):
    """A created replica's stage before its handler loads."""

    WAITING = "waiting"  # no node has granted its resources yet
    SETTING_UP = "setting_up"  # a node granted them and prepares its process (runtime env, code)
    RUNNING = "running"  # its process runs: the constructor (the handler import)


def asked_resources(options: Mapping[str, Any]) -> frozenset[str]:
    """The Ray resources (names) that actor ``options`` ask a positive amount of: ``GPU``, ``CPU``,
    ``memory``, custom ``resources`` and the ``accelerator_type:T`` marker."""
    asked = {
        name
        for name, key in (("GPU", "num_gpus"), ("CPU", "num_cpus"), ("memory", "memory"))
        if float(options.get(key) or 0) > 0
    }
    asked.update(str(k) for k, v in (options.get("resources") or {}).items() if float(v or 0) > 0)
    if options.get("accelerator_type"):
        asked.add(f"accelerator_type:{options['accelerator_type']}")
    return frozenset(asked)


def start_stage(
    has_process: bool, asked: frozenset[str] | None, demands: Sequence[Mapping[str, float]] | None
) -> Start:
    """The stage of a created replica that has not loaded its handler.

    ``has_process``: Ray reports a pid for it. ``asked``: :func:`asked_resources` of its options (None:
    unknown, as for a replica adopted from an earlier pool). ``demands``: the cluster's pending resource
    requests, one bundle each (None: unknown). Unknown means waiting.
    """
    if has_process:
        return Start.RUNNING
    if asked is None or demands is None:
        return Start.WAITING
    if any(float(amount) > 0 and name in asked for bundle in demands for name, amount in bundle.items()):
        return Start.WAITING
    return Start.SETTING_UP


NO_SETUP = "starting its worker process"
"""What a node does for a replica whose runtime env installs and fetches nothing."""


def setup_activity(runtime_env: Mapping[str, Any] | None) -> str:
    """What a node does for a replica of ``runtime_env`` before its process runs, for people to read:
    ``"installing torch, diffusers (runtimeEnv.pip)"``, ``"starting its worker process"``."""
    env = runtime_env or {}
    for installer in ("pip", "uv"):
        if env.get(installer):
            packages = _packages(env[installer])
            what = _listed(packages) if packages else "its packages"
            return f"installing {what} (runtimeEnv.{installer})"
    if env.get("conda"):
        return "creating its conda environment (runtimeEnv.conda)"
    for image in ("image_uri", "container"):
        if env.get(image):
            return f"pulling its container image (runtimeEnv.{image})"
    if env.get("working_dir") or env.get("py_modules"):
        return "fetching its code"
    return NO_SETUP


def _packages(spec: Any) -> list[str]:
    """The package names of a pip/uv list or ``{"packages": [...]}`` (a conda spec names none here)."""
    if isinstance(spec, Mapping):
        spec = spec.get("packages")
    if isinstance(spec, list | tuple):
        return [str(p) for p in spec]
    return []


def _listed(names: Iterable[str], most: int = 3) -> str:
    names = list(names)
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
