"""Bringing a Ripple instance up and down on a Ray cluster: the store, then the Serve app.

Used by ``ripple up`` (on a Ray head it starts) and ``python -m orchestrator deploy`` (on any running
cluster); the control actors themselves are created by :mod:`actors.bootstrap`.
"""

from __future__ import annotations

import contextlib
import logging
import time

from orchestrator.boot import BootConfig
from orchestrator.config import Settings, mask_url
from orchestrator.core.errors import NotReady
from orchestrator.names import APP_NAME, AUTOSCALER_NAME, QUEUE_NAME

log = logging.getLogger("ripple.instance")


def resolve_store(settings: Settings, *, detach: bool, check: bool = False) -> tuple[str, bool]:
    """The store URL: ``RIPPLE_REDIS_URL`` when set, else the embedded Redis of the data dir (started or
    adopted here). Returns ``(url, embedded)``. ``check``: raise NotReady when an external store does not
    answer (:func:`check_store_reachable`), for commands that start things; not in the Serve app's builder,
    which must not fail for a store still starting."""
    if settings.redis_url is not None:
        url = settings.redis_url.get_secret_value()
        if check:
            check_store_reachable(url)
        return url, False
    from orchestrator.ops import embedded_redis

    server = embedded_redis.start(settings.data_dir, detach=detach)
    return server.url, True


def check_store_reachable(url: str, timeout_s: float = 5.0) -> None:
    """Raise NotReady naming the store (its password masked) and why when a PING to ``url`` fails within
    ``timeout_s``: said before anything starts, not as a control actor's traceback later."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise NotReady(
            f"cannot reach the store at {mask_url(url)}: {exc} (check RIPPLE_REDIS_URL / --redis-url)"
        ) from None
    finally:
        client.close()


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
    return f"http://{_client_host(settings)}:{settings.port}"


def _client_host(settings: Settings) -> str:
    """Where a client on this machine reaches what binds ``settings.host``."""
    return "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host


def wait_direct_ingress(settings: Settings, timeout_s: float = 60.0) -> str:
    """The base URL of the first API replica's own HTTP server (Serve's direct ingress, on for the head by
    ``RIPPLE_DIRECT_INGRESS_PORT``), once it answers ``/health/live``. Raises NotReady naming the port when
    it does not within ``timeout_s`` (the port taken by something else: Serve then tries the next ones)."""
    import httpx

    assert settings.direct_ingress_port is not None
    url = f"http://{_client_host(settings)}:{settings.direct_ingress_port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/live", timeout=2.0).status_code == 200:
                return url
        time.sleep(0.2)
    raise NotReady(
        f"the API replica's direct ingress did not answer on {url} within {timeout_s:.0f} s "
        f"(RIPPLE_DIRECT_INGRESS_PORT={settings.direct_ingress_port}: is the port taken? Serve's log says "
        "which port it chose)"
    )


def shutdown(namespace: str, *, drain_timeout_s: float = 60.0) -> None:
    """Gracefully stop Ripple on the connected cluster: drain worker pools, stop the Serve app, then the
    control actors. Jobs stay in the store."""
    import ray
    from ray import serve

    from actors.pool import drain_all_pools

    # The autoscaler first: it would otherwise re-create a drained pool, whose (detached) replicas would
    # then outlive Ripple.
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(AUTOSCALER_NAME, namespace=namespace), no_restart=True)
    try:
        drain_all_pools(namespace, drain_timeout_s)
    except Exception:
        log.exception("draining pools failed")
    try:
        serve.delete(APP_NAME)
    except Exception:
        log.debug("no Serve app to delete", exc_info=True)
    with contextlib.suppress(ValueError):
        ray.kill(ray.get_actor(QUEUE_NAME, namespace=namespace), no_restart=True)
