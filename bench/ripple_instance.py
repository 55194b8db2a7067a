"""A Ripple instance for the in-cluster benchmarks: `ripple up --detach` started here, stopped with
`ripple down`, plus what those benchmarks look at from outside: the HTTP API, a Ray driver connected to the
instance's own Ray head, the PIDs of Ripple's actors and of the embedded Redis, and Redis itself.

Everything the instance started is stopped by stop(), after a failure too: `ripple down` first, then a kill
of every process seen under the Ray head and every process referring to the data dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import free_port, http_client, processes_under, wait_until
from bench.ripple_http import ripple_command

REPO_ROOT = Path(__file__).resolve().parent.parent

# Process titles of Ripple's own actors (Ray names an actor's process `ray::<Class>`).
RIPPLE_ACTORS = ("JobQueue", "Autoscaler", "WorkerPool", "WorkerReplica", "ServeReplica")


class RippleInstance:
    """`ripple up --insecure --detach --data-dir DIR --port PORT --num-gpus N`, run from the repo root (so
    that `bench.*` handlers import on the replicas)."""

    def __init__(
        self,
        workdir: Path,
        num_gpus: int = 2,
        *,
        dashboard: bool = True,
        env: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        """``dashboard`` False: Ray's dashboard off (``RIPPLE_DASHBOARD=false``), as on a bare Ray. ``env``:
        more environment for `ripple up` (so for the Ray head it starts, and every process under it);
        ``name`` tells the instance's files apart from another's in the same work dir."""
        name = name or ("ripple" if dashboard else "ripple-nodash")
        self.data_dir = workdir / f"{name}-data"
        self.log_path = workdir / f"{name}-up.log"
        self.num_gpus = num_gpus
        self.dashboard = dashboard
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.state: dict[str, Any] = {}
        self._seen: dict[int, psutil.Process] = {}
        self._ray_connected = False
        self._stopped = False

    # Life cycle -----------------------------------------------------------------------------------

    def start(self, timeout_s: float = 240.0) -> float:
        """Run `ripple up --detach` and return the seconds it took to be ready.

        Raises RuntimeError with the log's tail when it fails or takes longer than timeout_s.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = self.env()
        argv = [
            *ripple_command(), "up", "--insecure", "--detach", "--data-dir", str(self.data_dir),
            "--port", str(self.port), "--num-gpus", str(self.num_gpus),
        ]  # fmt: skip
        start_s = time.perf_counter()
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = None
        if code != 0:
            raise RuntimeError(f"ripple up failed ({code}):\n{self.log_tail()}")
        self.state = json.loads((self.data_dir / "ripple.json").read_text())
        self.remember()
        return time.perf_counter() - start_s

    def stop(self) -> None:
        """Disconnect the driver, `ripple down`, then kill whatever is left (never anything else).

        Idempotent: a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if not self.state:
            with contextlib.suppress(OSError, ValueError):
                self.state = json.loads((self.data_dir / "ripple.json").read_text())
        self.remember()
        self.disconnect_ray()
        with contextlib.suppress(Exception):
            subprocess.run(
                [*ripple_command(), "--data-dir", str(self.data_dir), "down"],
                env=self.env(),
                cwd=REPO_ROOT,
                timeout=120,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
        victims = [p for p in self._seen.values() if _alive(p)]
        victims += processes_under(self.data_dir)
        for proc in victims:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(victims, timeout=10)
        self._seen.clear()

    def env(self) -> dict[str, str]:
        """The environment for `ripple` commands and the driver: no inherited Ray address, auth off."""
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        env["RAY_AUTH_MODE"] = "disabled"
        if not self.dashboard:
            env["RIPPLE_DASHBOARD"] = "false"
        env.update(self.extra_env)
        return env

    def remember(self) -> None:
        """Record every process under the Ray head and the embedded Redis, to kill them if `down` fails."""
        for pid in (self.state.get("ray_head_pid"), self.state.get("pid"), self.redis_pid()):
            if not pid:
                continue
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(int(pid))
                self._seen[root.pid] = root
                for child in root.children(recursive=True):
                    self._seen[child.pid] = child

    def log_tail(self, n_chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n_chars:]
        return ""

    # HTTP -----------------------------------------------------------------------------------------

    def http(self) -> httpx.Client:
        return http_client(self.base_url)

    def create_endpoint(self, http: httpx.Client, spec: dict[str, Any]) -> None:
        """POST /api/v1/endpoints; raises RuntimeError on anything but 200/201."""
        reply = http.post("/api/v1/endpoints", json=spec)
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"POST /api/v1/endpoints answered {reply.status_code}: {reply.text[:500]}")

    def workers(self, http: httpx.Client, endpoint: str) -> list[dict[str, Any]]:
        """GET /api/v1/endpoints/{endpoint}/workers."""
        reply = http.get(f"/api/v1/endpoints/{endpoint}/workers")
        reply.raise_for_status()
        return list(reply.json()["workers"])

    def wait_serving(self, http: httpx.Client, endpoint: str, count: int, timeout_s: float = 180.0) -> None:
        """Wait until `count` Ray replicas of the endpoint are registered and not draining."""

        def ready() -> bool:
            live = [w for w in self.workers(http, endpoint) if w["kind"] == "ray" and not w["draining"]]
            return len([w for w in live if w["state"] in ("idle", "busy")]) >= count

        if not wait_until(ready, timeout_s, interval_s=0.25):
            raise RuntimeError(f"{count} replicas of {endpoint} not serving within {timeout_s:.0f} s")

    # Ray ------------------------------------------------------------------------------------------

    def connect_ray(self) -> None:
        """ray.init to the instance's own head, in Ripple's namespace, as an in-cluster client does."""
        import ray

        os.environ["RAY_AUTH_MODE"] = "disabled"
        os.environ.pop("RAY_ADDRESS", None)
        ray.init(
            address=self.state["ray_address"],
            namespace=self.state.get("namespace", "ripple"),
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
        self._ray_connected = True

    def disconnect_ray(self) -> None:
        if self._ray_connected:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
            self._ray_connected = False

    def queue(self) -> Any:
        """The JobQueue actor's handle (the driver must be connected)."""
        from orchestrator.names import QUEUE_NAME, get_actor

        return get_actor(QUEUE_NAME, self.state.get("namespace", "ripple"))

    # Processes and Redis --------------------------------------------------------------------------

    def actor_processes(self) -> dict[str, list[psutil.Process]]:
        """Ripple's actor processes under this instance's Ray head, by class (see RIPPLE_ACTORS)."""
        out: dict[str, list[psutil.Process]] = {name: [] for name in RIPPLE_ACTORS}
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(int(self.state["ray_head_pid"])).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    title = proc.name() if proc.name().startswith("ray::") else " ".join(proc.cmdline())
                    for name in RIPPLE_ACTORS:
                        if title.startswith(f"ray::{name}"):
                            out[name].append(proc)
        return out

    def redis_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.data_dir / "redis.pid").read_text().strip())
        return None

    def redis(self) -> Any:
        """A redis-py client on the embedded Redis's unix socket."""
        import redis

        return redis.Redis(unix_socket_path=str(self.data_dir / "redis.sock"))


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    return False


@contextlib.contextmanager
def running(workdir: Path, num_gpus: int = 2) -> Iterator[RippleInstance]:
    """A started instance, always stopped on exit (failure and Ctrl-C included)."""
    instance = RippleInstance(workdir, num_gpus)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
