"""Ripple's HTTP entry point: the Ray Serve deployment around the FastAPI app of ``orchestrator.api``.

The routers (probes and metrics, the RunPod client API and worker protocol under ``/v2/{endpoint}``, the
management API under ``/api/v1``, the web UI), their dependencies, schemas, error mapping and middleware
live in ``orchestrator/api/``; this module composes them with the per-replica state, and defines the Serve
deployment ``RippleAPI`` and the application builders.

Deploy with ``ripple up``, ``python -m orchestrator deploy``, or ``serve run serve_app:app`` (``app`` is a
Serve application builder that reads Ripple's settings from the environment).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
from fastapi import FastAPI
from ray import serve

from actors.actor_logs import RayActorLogs
from orchestrator import logs
from orchestrator.api.app import create_app
from orchestrator.api.deps import AppState
from orchestrator.boot import BootConfig
from orchestrator.core.packages import PackageInfo
from orchestrator.core.placement import ingress_actor_options

log = logging.getLogger("ripple.http")


def cluster_facts() -> dict[str, Any]:
    """Ray nodes (GPUs, alive, draining) and the pending resource demand, summarised (blocking)."""
    from actors.ray_cluster import draining_nodes
    from orchestrator.core.cluster import shape_demand, shape_nodes, summarize

    nodes = shape_nodes(ray.nodes(), draining_nodes())
    demand: list[dict[str, Any]] | None
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        demand = shape_demand(get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5))
    except Exception:  # pending demand is a bonus: older GCS, no permission, a timeout
        log.debug("pending resource demand unavailable", exc_info=True)
        demand = None
    return summarize(nodes, demand)


# Per-replica state: the deployment's constructor sets ``boot``; the routes read it through the app.
def store_package(data: bytes, info: PackageInfo) -> bool:
    """Store a checked code package in the Ray cluster's GCS, and a copy where the boot config keeps them
    (``ripple up``'s data dir), blocking; whether the GCS had it already. See ``actors.packages``."""
    from actors.packages import put_package

    keep = STATE.boot.packages_dir if STATE.boot is not None else None
    return put_package(data, info, Path(keep) if keep else None)


STATE = AppState(cluster_facts=cluster_facts, actor_logs=RayActorLogs(), store_package=store_package)
fastapi_app = create_app(STATE)


@serve.deployment(name="ripple-api", max_ongoing_requests=2000, ray_actor_options={"num_cpus": 0})
@serve.ingress()
class RippleAPI:
    """The ingress deployment; its constructor makes sure the control actors exist (idempotent).

    The FastAPI app is bound late (``__serve_build_asgi_app__``), inside the replica's process, so its
    routes see this replica's state rather than a pickled copy.
    """

    def __init__(self, boot: BootConfig) -> None:
        # Serve may pickle this class by value: reach the module's state through a fresh import.
        import serve_app as module
        from actors.bootstrap import ensure_control_actors

        module.STATE.boot = boot
        module.STATE.forget_actors()
        module.STATE.behind_serve = True
        logs.configure("INFO")  # JSON lines in the replica's log file
        try:
            ensure_control_actors(boot, timeout_s=120.0)
        except Exception:
            logging.getLogger("ripple.http").exception(
                "control actors not ready; answering 503 until they are"
            )

    def __serve_build_asgi_app__(self) -> FastAPI:
        import serve_app as module

        app: FastAPI = module.fastapi_app
        return app


def build(boot: BootConfig, replicas: int = 1) -> Any:
    """The Serve application for a resolved boot config, its replicas placed by
    :func:`orchestrator.core.placement.ingress_actor_options` (call with Ray initialised)."""
    options = ingress_actor_options(ray.cluster_resources())
    return RippleAPI.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options=options
    ).bind(boot)


def app(args: dict[str, Any]) -> Any:
    """Serve application builder (``serve run serve_app:app``, RayService ``import_path``).

    Settings come from the environment and ``RIPPLE_CONFIG``; ``args`` (from a Serve config) override
    them by setting name. The store is resolved here: ``RIPPLE_REDIS_URL``, else the embedded Redis of the
    data dir, started detached.
    """
    from orchestrator.auth import auth_config, load_or_create_keys
    from orchestrator.boot import boot_config
    from orchestrator.config import load_settings
    from orchestrator.ops.instance import resolve_store

    settings = load_settings(**args)
    keys = load_or_create_keys(settings, create=not settings.insecure)
    store_url, embedded = resolve_store(settings, detach=True)
    boot = boot_config(settings, store_url, embedded, auth_config(settings, keys))
    return build(boot, settings.serve_replicas)
