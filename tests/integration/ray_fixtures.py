"""Fixtures that bring Ripple up on a real local Ray (logical GPUs) and a real embedded Redis, without HTTP.

Import the fixtures into a test module (``from tests.integration.ray_fixtures import ripple, rp``) and set,
at module level, what that module needs:

- ``RAY_INIT = {"num_cpus": 4, "num_gpus": 2}``: the local Ray (one per module, shut down at its end);
- ``AUTOSCALER = {...}``: autoscaler settings (``enabled``, ``interval_s``, ``starvation_step_s``, ...);
- ``SETTINGS = {...}``: other Ripple settings (short timings are the default here).

A module that builds its own cluster (``ray.cluster_utils.Cluster``) defines a module-scoped ``ray_cluster``
fixture that yields after connecting; ``ripple`` then uses it instead of starting a local Ray.

``ripple`` (module scope) is a :class:`Ripple`: the queue and autoscaler actor handles plus helpers.
``rp`` (per test) is the same object, and deletes every endpoint the test left (cancelling their jobs) and
waits for their pools and replicas to go, so the next test starts from an empty cluster.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from actors.bootstrap import ensure_control_actors
from orchestrator.auth import AuthConfig
from orchestrator.boot import BootConfig, boot_config
from orchestrator.config import load_settings
from orchestrator.core.errors import Conflict
from orchestrator.core.models import EndpointPatch, EndpointSpec, RunRequest
from orchestrator.names import AUTOSCALER_NAME, QUEUE_NAME, pool_name
from orchestrator.ops import embedded_redis

REPO_ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.integration.handlers_for_tests"
FINAL = {"COMPLETED", "FAILED", "TIMED_OUT", "CANCELLED"}
T = TypeVar("T")

DEFAULT_SETTINGS: dict[str, Any] = {
    "heartbeat_timeout_s": 4.0,
    "take_wait_s": 1.0,
    "stop_wait_s": 1.0,
    "sweep_interval_s": 0.2,
    "drain_timeout_s": 10.0,
}
DEFAULT_AUTOSCALER: dict[str, Any] = {"enabled": True, "interval_s": 0.5}


def handler(name: str) -> str:
    """The handler reference of one of :mod:`tests.integration.handlers_for_tests`' functions."""
    return f"{HANDLERS}:{name}"


def wait_for(
    fn: Callable[[], T | Literal[False] | None], timeout_s: float, what: str, interval_s: float = 0.25
) -> T:
    """Poll ``fn`` until it returns something truthy (returned) or ``timeout_s`` passes (AssertionError
    with the last value seen)."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = fn()
        if last:
            return cast(T, last)
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last value: {last!r}")
        time.sleep(interval_s)


def prepare_ray_env() -> None:
    """Environment every Ray process of a test inherits: no auth token, the repo importable, no address."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ.pop("RAY_ADDRESS", None)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *paths])


def runtime_env() -> dict[str, Any]:
    return {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}}


@dataclass
class Ripple:
    """One Ripple instance on the test's Ray: handles and blocking helpers (each a Ray call)."""

    boot: BootConfig
    namespace: str
    redis_url: str
    queue: Any
    autoscaler: Any

    def call(self, ref: Any, timeout_s: float = 30.0) -> Any:
        return ray.get(ref, timeout=timeout_s)

    def create_endpoint(self, name: str, handler_name: str, **fields: Any) -> dict[str, Any]:
        """Create an endpoint running ``handler_name``; ``fields`` are camelCase endpoint fields."""
        body = {"name": name, "handler": handler(handler_name), **fields}
        return dict(self.call(self.queue.create_endpoint.remote(EndpointSpec.model_validate(body))))

    def update_endpoint(self, name: str, **fields: Any) -> dict[str, Any]:
        patch = EndpointPatch.model_validate(fields)
        return dict(self.call(self.queue.update_endpoint.remote(name, patch)))

    def submit(self, endpoint: str, inputs: list[Any], **policy: Any) -> list[str]:
        reqs = [
            RunRequest.model_validate({"input": i, **({"policy": policy} if policy else {})}) for i in inputs
        ]
        return list(self.call(self.queue.submit.remote(endpoint, reqs)))

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call(self.queue.get_job.remote(job_id)))

    def jobs(self, job_ids: list[str]) -> list[dict[str, Any]]:
        return [self.job(j) for j in job_ids]

    def wait_final(self, job_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """Every job's detail once all are final (AssertionError after ``timeout_s``)."""
        wait_for(
            lambda: all(j["status"] in FINAL for j in self.jobs(job_ids)),
            timeout_s,
            f"jobs {job_ids} to finish",
            0.3,
        )
        return self.jobs(job_ids)

    def wait_status(self, job_id: str, status: str, timeout_s: float) -> dict[str, Any]:
        return wait_for(
            lambda: (j := self.job(job_id))["status"] == status and j, timeout_s, f"job {job_id} {status}"
        )

    def workers(self, endpoint: str, live_only: bool = True) -> list[dict[str, Any]]:
        """The queue's view of the endpoint's workers (``stopped`` ones left out when ``live_only``)."""
        ws = list(self.call(self.queue.list_workers.remote(endpoint)))
        return [w for w in ws if w.get("state") != "stopped"] if live_only else ws

    def pool(self, endpoint: str) -> Any:
        return ray.get_actor(pool_name(endpoint), namespace=self.namespace)

    def pool_summary(self, endpoint: str) -> dict[str, Any]:
        """The pool's summary (an empty one while the autoscaler has not created the pool yet)."""
        try:
            pool = self.pool(endpoint)
        except ValueError:
            return {"endpoint": endpoint, "replicas": [], "errors": []}
        return dict(self.call(pool.summary.remote()))

    def pool_replicas(self, endpoint: str) -> list[dict[str, Any]]:
        """The pool's own replicas (``[]`` while the pool does not exist yet)."""
        return list(self.pool_summary(endpoint)["replicas"])

    def wait_replicas(
        self, endpoint: str, n: int, timeout_s: float, states: tuple[str, ...] = ("idle",)
    ) -> list[dict[str, Any]]:
        """Wait until exactly ``n`` of the pool's replicas are in ``states`` and none other is listed."""

        def ok() -> list[dict[str, Any]] | None:
            rs = self.pool_replicas(endpoint)
            good = [r for r in rs if r["state"] in states]
            return good if len(good) == n and len(rs) == n and (n or not rs) else None

        if n == 0:
            wait_for(lambda: not self.pool_replicas(endpoint), timeout_s, f"{endpoint}: no replicas")
            return []
        return wait_for(ok, timeout_s, f"{endpoint}: {n} replicas in {states}")

    def replica_actor(self, worker_id: str) -> Any:
        endpoint, suffix = worker_id.rsplit("-", 1)
        return ray.get_actor(f"worker:{endpoint}:{suffix}", namespace=self.namespace)

    def history(self, endpoint: str, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.call(self.autoscaler.history.remote(endpoint, limit)))

    def status(self) -> dict[str, Any]:
        return dict(self.call(self.autoscaler.status.remote()))

    def gpus_free(self) -> float:
        return float(ray.available_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]

    def delete_all(self, timeout_s: float = 45.0) -> None:
        """Cancel the jobs of every endpoint, delete the endpoints, wait for pools and replicas to go."""
        names = [e["name"] for e in self.call(self.queue.list_endpoints.remote())]
        deadline = time.monotonic() + timeout_s
        for name in names:
            wait_for(partial(self._cancel_and_delete, name), deadline - time.monotonic(), f"{name} deleted")
        for name in names:
            wait_for(partial(_gone, pool_name(name), self.namespace), deadline - time.monotonic(), name)
        total = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
        wait_for(lambda: self.gpus_free() >= total, max(1.0, deadline - time.monotonic()), "GPUs released")

    def _cancel_and_delete(self, endpoint: str) -> bool:
        """Cancel the endpoint's jobs in progress and delete it; False while replicas take queued ones.

        A replica may take a queued job between the listing and the delete, which the queue then refuses
        (409, a job in progress); the caller tries again.
        """
        listing = self.call(self.queue.list_jobs.remote(endpoint, "IN_PROGRESS", 1000, None))
        for j in listing["jobs"]:
            with contextlib.suppress(Exception):  # finished meanwhile
                self.call(self.queue.cancel.remote(endpoint, j["id"]))
        try:
            self.call(self.queue.delete_endpoint.remote(endpoint))
        except Conflict:  # Ray raises the actor's error as an instance of its class
            return False
        return True


def stop_control_actors(namespace: str) -> None:
    """Kill the autoscaler (first, so it creates no pool meanwhile), any pool left, then the queue."""
    from ray.util import list_named_actors

    names = [AUTOSCALER_NAME]
    names += [
        str(e["name"])
        for e in list_named_actors(all_namespaces=True)
        if e.get("namespace") == namespace and str(e.get("name", "")).startswith(("pool:", "worker:"))
    ]
    for name in [*names, QUEUE_NAME]:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:
            continue


def _gone(name: str, namespace: str) -> bool:
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


def start_ripple(
    redis_url: str,
    data_dir: Path,
    namespace: str,
    settings: dict[str, Any] | None = None,
    autoscaler: dict[str, Any] | None = None,
) -> Ripple:
    """Create the control actors on the connected Ray under a fresh key prefix."""
    merged = {**DEFAULT_SETTINGS, **(settings or {})}
    s = load_settings(
        namespace=namespace,
        key_prefix=f"{namespace}:",
        data_dir=data_dir,
        autoscaler={**DEFAULT_AUTOSCALER, **(autoscaler or {})},
        **merged,
    )
    boot = boot_config(s, redis_url, True, AuthConfig(enabled=False))
    handles = ensure_control_actors(boot, timeout_s=90.0)
    return Ripple(boot, namespace, redis_url, handles[QUEUE_NAME], handles[AUTOSCALER_NAME])


def _startup_timeout(exc: Exception) -> bool:
    """Whether ``exc`` is Ray giving up on a node's start in time (not a start that failed)."""
    message = str(exc)
    return "timed out during startup" in message or "Timed out waiting for file" in message


def _children() -> set[int]:
    return {c.pid for c in psutil.Process().children()}


def _kill_new_children(before: set[int]) -> None:
    """Kill this process's children (and theirs) not in ``before``: what a Ray start that timed out left
    running (its GCS, monitors, a raylet that never registered), which ``ray.shutdown()`` does not know of,
    since the node never came up."""
    for child in psutil.Process().children():
        if child.pid in before:
            continue
        with contextlib.suppress(psutil.Error):
            for p in [*child.children(recursive=True), child]:
                with contextlib.suppress(psutil.Error):
                    p.kill()


@contextlib.contextmanager
def cluster_of(head: dict[str, Any], nodes: Sequence[dict[str, Any]]) -> Iterator[Cluster]:
    """A ``ray.cluster_utils.Cluster`` of a head (``head``: its node args, no dashboard) and ``nodes``, this
    process connected to it in a fresh namespace; shut down at the end. Ray gives each new node a fixed 30 s
    to register with its GCS, and a new head 30 s for its GCS to write its port, which a loaded 2-core
    machine has missed (CI, 2026-12-05 and 12-06): a start that times out so is tried once more. (Not
    ``RAY_gcs_server_port_wait_time_s``: it also stretches every driver's connection retries, so a
    refused one hangs for as long.)"""
    prepare_ray_env()
    for attempt in (1, 2):
        cluster = Cluster()
        before = _children()
        try:
            cluster.add_node(**{**head, "include_dashboard": False})  # the first node is the head
            for node in nodes:
                cluster.add_node(**node)
            cluster.wait_for_nodes()
            break
        except Exception as exc:
            cluster.shutdown()  # type: ignore[no-untyped-call]
            _kill_new_children(before)
            if attempt == 2 or not _startup_timeout(exc):
                raise
    try:
        ray.init(
            address=cluster.address,
            namespace=f"it{uuid.uuid4().hex[:8]}",
            runtime_env=runtime_env(),
            log_to_driver=False,
        )
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded Redis of this module's own, stopped at its end."""
    data_dir = tmp_path_factory.mktemp("redis")
    server = embedded_redis.start(data_dir, detach=False)
    try:
        yield server.url
    finally:
        embedded_redis.stop(data_dir)


@pytest.fixture(scope="module")
def local_ray(request: pytest.FixtureRequest) -> Iterator[None]:
    """A local Ray for this module (``RAY_INIT`` of the module), shut down at its end."""
    prepare_ray_env()
    init = {"num_cpus": 4, "num_gpus": 2, **getattr(request.module, "RAY_INIT", {})}
    for attempt in (1, 2):
        before = _children()
        try:
            ray.init(
                address="local",  # a new local Ray of our own, never someone else's running cluster
                namespace=f"it{uuid.uuid4().hex[:8]}",
                include_dashboard=False,
                runtime_env=runtime_env(),
                log_to_driver=False,
                **init,
            )
            break
        except Exception as exc:
            # Ray's own start-up, forked from this pytest process while gRPC threads of the module before
            # are still about: its GCS may never write its port ("Timed out waiting for file
            # .../gcs_server_port_..."), or its raylet never start ("The current node timed out during
            # startup", no raylet log written: 2026-12-08 here). What it started is killed and it is started
            # again once, as the e2e instances' ``ray start`` is.
            ray.shutdown()
            _kill_new_children(before)
            if attempt == 2 or not _startup_timeout(exc):
                raise
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def ripple(
    request: pytest.FixtureRequest, module_redis: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Ripple]:
    """Ripple's control actors on this module's Ray (its ``ray_cluster`` fixture if it has one)."""
    if "ray_cluster" in request.fixturenames or hasattr(request.module, "ray_cluster"):
        request.getfixturevalue("ray_cluster")
    else:
        request.getfixturevalue("local_ray")
    namespace = f"rp{uuid.uuid4().hex[:8]}"
    r = start_ripple(
        module_redis,
        tmp_path_factory.mktemp("data"),
        namespace,
        getattr(request.module, "SETTINGS", None),
        getattr(request.module, "AUTOSCALER", None),
    )
    try:
        yield r
    finally:
        with contextlib.suppress(Exception):  # shut down anyway
            r.delete_all(timeout_s=30.0)
        stop_control_actors(namespace)


@pytest.fixture
def rp(ripple: Ripple) -> Iterator[Ripple]:
    """The module's Ripple; every endpoint the test created is deleted afterwards."""
    yield ripple
    ripple.delete_all()
