"""A local Ripple instance: the Ray head it starts, its state file, and a graceful stop.

``ripple up`` in the foreground keeps every process it starts in its own process group, so they end with
it; ``--detach`` starts them in their own sessions and records them in ``<data-dir>/ripple.json`` for
``ripple down``. With ``RAY_ADDRESS`` set, Ripple joins that cluster and never stops it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator.core import gpu_types
from orchestrator.core.errors import NotReady
from orchestrator.core.standby import PRELOADED_MODULES
from orchestrator.ops.procs import alive

STATE_FILE = "ripple.json"
RAY_TOKEN_FILE = "ray-auth-token"


@dataclass
class InstanceState:
    """What ``ripple down`` and the CLI need to find a running instance."""

    url: str
    data_dir: str
    ray_address: str
    namespace: str
    pid: int
    ray_head_pid: int | None
    embedded_store: bool
    dashboard_url: str | None
    detached: bool
    direct_url: str | None = None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout_s: float = 3.0) -> bool:
    """Whether a Ripple instance answers its liveness probe at ``url`` within ``timeout_s``."""
    import httpx

    try:
        return httpx.get(f"{url}/health/live", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on host:port (a server bound with SO_REUSEPORT, as Serve's proxy is,
    counts: a second one would share the port with it)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def configure_ray_auth(data_dir: Path, *, own_head: bool) -> str:
    """Set this process's Ray authentication (inherited by the head and every Ray process it starts) and
    return the mode.

    ``RAY_AUTH_MODE`` set by the user wins. Otherwise token authentication is on whenever a token file
    exists in ``data_dir`` (an instance started that way) or Ripple starts its own head (``own_head``): Ray
    2.60's GCS, raylet and agents listen on every interface whatever the node address, so the token is
    what keeps others on the network out. The token is made once, kept in ``data_dir``/ray-auth-token
    (mode 0600) and passed by path (``RAY_AUTH_TOKEN_PATH``). Joining a cluster (``RAY_ADDRESS``) without a
    mode keeps Ray's default of no token, as before.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode
    path = data_dir / RAY_TOKEN_FILE
    if not path.is_file() and not own_head:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        return "disabled"
    if not path.is_file():
        import secrets

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(path.resolve()))
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        # Ray read RAY_AUTH_MODE and cached the token when it was imported: make it read them again (what
        # Ray's own token setup does after changing the mode).
        raylet.Config.initialize("")
        raylet.AuthenticationTokenLoader.instance().reset_cache()
    return "token"


def _ray_cli() -> str:
    exe = Path(sys.executable).with_name("ray")
    return str(exe) if exe.exists() else (shutil.which("ray") or "ray")


def head_resources(typed_gpus: Mapping[str, float] | None) -> dict[str, float]:
    """Custom resources of the local head: ``ripple-control`` and, with typed GPUs, one
    ``accelerator_type:<TYPE>`` per type."""
    extra = gpu_types.head_resources(typed_gpus)[1] if typed_gpus else {}
    return {"ripple-control": 1000, **extra}


def start_ray_head(
    data_dir: Path,
    *,
    num_gpus: float | None,
    num_cpus: float | None,
    dashboard: bool,
    dashboard_port: int,
    detach: bool,
    timeout_s: float = 90.0,
    typed_gpus: Mapping[str, float] | None = None,
    direct_ingress_port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``ray start --head --block`` bound to loopback with the ``ripple-control`` resource.

    ``typed_gpus`` (``{"A100": 1, "L4": 1}``, from ``ripple up --gpus``) declares that many logical GPUs
    in all and one ``accelerator_type:<TYPE>`` resource per type, valued at its count
    (:func:`head_resources`); it replaces ``num_gpus``. Serve's proxy reaches replicas over gRPC
    (:func:`serve_transport_env`); its worker processes import Ripple's actor modules as they start
    (:func:`preload_env`). ``direct_ingress_port``: Serve's direct ingress on for every process of the head
    (:func:`direct_ingress_env`).

    Returns the process and the GCS address. Raises NotReady when the head does not come up in time.
    """
    port = free_port()
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--resources={json.dumps(head_resources(typed_gpus))}",
        f"--include-dashboard={'true' if dashboard else 'false'}",
    ]
    if dashboard:
        port_ok = dashboard_port and port_free(dashboard_port)
        cmd += [
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port if port_ok else free_port()}",
        ]
    if typed_gpus:
        num_gpus = gpu_types.head_resources(typed_gpus)[0]
    if num_gpus is not None:
        cmd.append(f"--num-gpus={num_gpus:g}")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus:g}")
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    # Handler modules next to where `ripple up` runs are importable by replicas, as with `serve run`.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (os.getcwd(), env.get("PYTHONPATH", "")) if p)
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "5")
    # Keep idle worker processes for minutes rather than 1 s, so a replica started from zero reuses one
    # instead of paying for a new Python process (seconds on a small machine).
    env.setdefault("RAY_idle_worker_killing_time_threshold_ms", "600000")
    env.update(serve_transport_env(env))
    env.update(preload_env(env))
    if direct_ingress_port is not None:
        env.update(direct_ingress_env(direct_ingress_port, env))
    env["PYTHONUNBUFFERED"] = "1"  # the readiness line below must reach the log at once
    log_path = data_dir / "ray-head.log"
    log = open(log_path, "ab")  # noqa: SIM115 (handed to the child process, closed by the caller)
    offset = log.tell()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=detach
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    # The GCS port opens long before the node is up, and a raylet that fails after that (it happens on a
    # loaded machine) would leave `ray.init` retrying for minutes: wait for `ray start` to say it is done.
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotReady(f"ray start exited with {proc.returncode}; see {log_path}")
        if _head_started(log_path, offset):
            return proc, address
        time.sleep(0.2)
    if detach:  # the head's own session: GCS, raylet and agents with it
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    raise NotReady(f"the Ray head did not start within {timeout_s:.0f} s; see {data_dir / 'ray-head.log'}")


DIRECT_INGRESS_PORTS = 64
"""Ports kept for direct ingress from ``RIPPLE_DIRECT_INGRESS_PORT`` up: one per API replica on a node."""


def direct_ingress_env(port: int, env: Mapping[str, str]) -> dict[str, str]:
    """The environment that turns Ray Serve's direct ingress on (read by Serve's controller and replicas
    when they start): every replica of an ingress deployment (Ripple's API) also serves HTTP itself, on a
    port from ``port`` up, on the host the proxy binds, and runs the app on the loop that serves it (not on
    a loop of its own in another thread: a hop less each way, about 0.45 ms of a 2.9 ms runsync here; every
    route of the app awaits rather than blocks). Ingress replicas drain for 2 s before they stop (Serve's
    default, 30 s, waits for an outside load balancer to let go of them). What ``env`` already sets of the
    last two is kept."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + DIRECT_INGRESS_PORTS),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": env.get(
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "2"
        ),
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": env.get(
            "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "0"
        ),
    }


SERVE_GRPC_MAX_MESSAGE_BYTES = 512 * 1024 * 1024
"""The largest message Serve's proxy and replicas pass over gRPC: Redis's largest value, so no reply Ripple
can store (a job's output, a listing of them) is refused. gRPC's own default, 4 MiB, would turn a larger
reply into a 500."""


def serve_transport_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment in which Serve's HTTP proxy hands each request to a replica, and takes its reply, over
    gRPC rather than through Ray actor calls (as Ray's high-throughput mode,
    ``RAY_SERVE_THROUGHPUT_OPTIMIZED``, does; about 2-3 ms less of a 7-15 ms request through the proxy on a
    2-core machine, runsync and a plain route alike: ``bench/PERFORMANCE.md``), with gRPC's message limit
    raised to :data:`SERVE_GRPC_MAX_MESSAGE_BYTES`. What ``env`` already sets of either is kept
    (``RAY_SERVE_PROXY_USE_GRPC=0``: actor calls, as Serve's default)."""
    return {
        "RAY_SERVE_PROXY_USE_GRPC": env.get("RAY_SERVE_PROXY_USE_GRPC", "1"),
        "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": env.get(
            "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH", str(SERVE_GRPC_MAX_MESSAGE_BYTES)
        ),
    }


PRELOAD_ENV = "RAY_preload_python_modules"


def preload_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment in which every worker process the head starts imports
    :data:`~orchestrator.core.standby.PRELOADED_MODULES` before it takes work (Ray's
    ``preload_python_modules``): a replica created in a standby process then starts serving without
    importing them (a high-priority job's replica after a preemption: 0.28-0.47 s from the job's creation to
    its start, against 0.70-0.98 s, ``bench/PERFORMANCE.md``). What ``env`` already sets is kept (an empty
    value: nothing preloaded)."""
    return {PRELOAD_ENV: env.get(PRELOAD_ENV, ",".join(PRELOADED_MODULES))}


def _head_started(log_path: Path, offset: int) -> bool:
    """True once ``ray start`` has logged, after ``offset``, that the node is up."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            return b"Ray runtime started" in f.read()
    except OSError:
        return False


def stop_process(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            pass
        if not alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def write_state(data_dir: Path, state: InstanceState) -> None:
    path = data_dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2))
    tmp.replace(path)


def read_state(data_dir: Path) -> InstanceState | None:
    try:
        raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return InstanceState(**raw)


def clear_state(data_dir: Path) -> None:
    (data_dir / STATE_FILE).unlink(missing_ok=True)
