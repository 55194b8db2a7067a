"""Bringing Ripple up on a Ray cluster: the store, the control actors and the Serve app.

Used by ``ripple up`` (on a Ray head it starts), by ``python -m orchestrator deploy`` (on any running
cluster, through ``ray job submit``) and by the Serve app itself (``serve run serve_app:app``, RayService),
so all three paths converge on the same idempotent :func:`ensure_control_actors`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.auth import AuthConfig
from orchestrator.config import QueueConfig, Settings
from orchestrator.errors import NotReady
from orchestrator.names import (
    API_RESOURCE,
    APP_NAME,
    AUTOSCALER_NAME,
    CONTROL_RESOURCE,
    QUEUE_NAME,
    get_actor,
)

log = logging.getLogger("ripple.runtime")

__all__ = ["APP_NAME", "AUTOSCALER_NAME", "CONTROL_RESOURCE", "QUEUE_NAME", "BootConfig", "get_actor"]


@dataclass(frozen=True)
class BootConfig:
    """Everything the HTTP replicas and the control actors need, resolved once on the driver."""

    namespace: str
    queue: QueueConfig
    auth: AuthConfig
    max_body_bytes: int
    take_wait_s: float
    stop_wait_s: float
    runsync_wait_s: float
    data_dir: str
    embedded_store: bool
    autoscaler: dict[str, Any]
    dashboard_url: str | None = None


def resolve_store(settings: Settings, *, detach: bool) -> tuple[str, bool]:
    """The store URL: ``RIPPLE_REDIS_URL`` when set, else the embedded Redis of the data dir (started or
    adopted here). Returns ``(url, embedded)``."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value(), False
    from orchestrator import embedded_redis

    server = embedded_redis.start(settings.data_dir, detach=detach)
    return server.url, True


def control_options(namespace: str, name: str, max_concurrency: int) -> dict[str, Any]:
    """Ray options of a control actor: named, detached, restarted forever, no CPU held, and pinned to
    the node that declares the ``ripple-control`` resource (the head) when the cluster has one."""
    import ray

    opts: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": 0,
        "max_concurrency": max_concurrency,
        "num_cpus": 0,
    }
    if ray.cluster_resources().get(CONTROL_RESOURCE, 0) >= 1:
        opts["resources"] = {CONTROL_RESOURCE: 1}
    return opts


def ingress_actor_options(cluster_resources: dict[str, float]) -> dict[str, Any]:
    """Ray options of an HTTP ingress replica: no CPU held, and kept off the GPU nodes that come and go.

    A cluster that declares ``ripple-api`` slots (cluster.yaml's head, KubeRay's api pods) gets one slot
    per replica; otherwise a cluster with a ``ripple-control`` node (the head) hosts the ingress there.
    Without either (a plain ``ray start``) the replica goes wherever Serve puts it. Kept off the GPU
    nodes because a node that still hosts an ingress replica cannot finish a drain before Serve's proxy
    on it has drained (30 s or more), and scale-down waits for it.
    """
    opts: dict[str, Any] = {"num_cpus": 0}
    if cluster_resources.get(API_RESOURCE, 0) >= 1:
        opts["resources"] = {API_RESOURCE: 1}
    elif cluster_resources.get(CONTROL_RESOURCE, 0) >= 1:
        opts["resources"] = {CONTROL_RESOURCE: 1}
    return opts


def ensure_queue(boot: BootConfig, timeout_s: float = 60.0) -> Any:
    """Get or create the JobQueue actor and wait until it has recovered from the store."""
    import ray

    from actors.job_queue import JobQueue

    handle = (
        ray.remote(JobQueue)
        .options(**control_options(boot.namespace, QUEUE_NAME, 100_000))
        .remote(boot.queue, boot.namespace)
    )
    _wait(handle.ready.remote(), timeout_s, "job queue")
    return handle


def ensure_control_actors(boot: BootConfig, timeout_s: float = 60.0) -> dict[str, Any]:
    """Idempotently create every control actor; returns their handles by name."""
    handles = {QUEUE_NAME: ensure_queue(boot, timeout_s)}
    try:
        from actors.autoscaler import ensure_autoscaler
    except ImportError:
        return handles
    handles[AUTOSCALER_NAME] = ensure_autoscaler(boot, timeout_s)
    return handles


def _wait(ref: Any, timeout_s: float, what: str) -> Any:
    import ray

    try:
        return ray.get(ref, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise NotReady(f"the {what} did not become ready within {timeout_s:.0f} s") from None


def deploy_serve(boot: BootConfig, settings: Settings, *, blocking_ready_s: float = 120.0) -> str:
    """Start Serve's HTTP proxy on host:port and (re)deploy the app; returns the base URL."""
    from ray import serve

    import serve_app

    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(
        serve_app.build(boot, replicas=settings.serve_replicas),
        name=APP_NAME,
        route_prefix="/",
        blocking=False,
    )
    deadline = time.monotonic() + blocking_ready_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "RUNNING":
            break
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise NotReady(f"the Serve app failed to deploy: {status.message}")
        time.sleep(0.2)
    else:
        raise NotReady(f"the Serve app did not start within {blocking_ready_s:.0f} s")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}"


def boot_config(
    settings: Settings, store_url: str, embedded: bool, auth: AuthConfig, dashboard_url: str | None = None
) -> BootConfig:
    """Freeze the resolved settings into what replicas and actors receive."""
    return BootConfig(
        namespace=settings.namespace,
        queue=QueueConfig.from_settings(settings, store_url),
        auth=auth,
        max_body_bytes=settings.max_body_bytes,
        take_wait_s=settings.take_wait_s,
        stop_wait_s=settings.stop_wait_s,
        runsync_wait_s=settings.runsync_wait_s,
        data_dir=str(settings.data_dir.resolve()),
        embedded_store=embedded,
        autoscaler={**settings.autoscaler.model_dump(), "drain_timeout_s": settings.drain_timeout_s},
        dashboard_url=dashboard_url,
    )


def shutdown(namespace: str, *, drain_timeout_s: float = 60.0) -> None:
    """Gracefully stop Ripple on the connected cluster: drain worker pools, stop the Serve app, then the
    control actors. Jobs stay in the store."""
    import ray
    from ray import serve

    from actors.pool import drain_all_pools

    try:
        drain_all_pools(namespace, drain_timeout_s)
    except Exception:
        log.exception("draining pools failed")
    try:
        serve.delete(APP_NAME)
    except Exception:
        log.debug("no Serve app to delete", exc_info=True)
    for name in (AUTOSCALER_NAME, QUEUE_NAME):
        try:
            handle = ray.get_actor(name, namespace=namespace)
        except ValueError:
            continue
        ray.kill(handle, no_restart=True)
