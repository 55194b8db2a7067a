"""End-to-end fixtures: a real ``ripple up --detach`` and unmodified RunPod SDK workers.

One instance (``ripple_app``) is shared by the whole session: starting one costs ~15-20 s of a 2-core
machine. Its timeouts are shortened (heartbeat 6 s, lease grace 4 s, long-polls 2 s) so that lease loss and
timeouts are testable in seconds. Tests that need their own instance (crash recovery) use
:func:`start_instance` / :func:`stop_instance` on their own data dir. Every instance is stopped at the end
with ``ripple down``, and every process it started is killed if that fails.

Workers are the stock ``runpod`` worker SDK running ``examples/handlers.py`` in a subprocess with an empty
HOME, the worker protocol URLs of the contract, and the offline flags; each runs in its own session so that
its heartbeat process dies with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.ops.procs import alive
from tests import ports

REPO = Path(__file__).resolve().parents[2]
HANDLERS = REPO / "examples" / "handlers.py"
UP_TIMEOUT_S = 240.0
DOWN_TIMEOUT_S = 120.0

FAST_ENV = {
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "6",
    "RIPPLE_LEASE_GRACE_S": "4",
    "RIPPLE_TAKE_WAIT_S": "2",
    "RIPPLE_STOP_WAIT_S": "2",
    "RIPPLE_WEBHOOK_BACKOFF_S": "0.5",
    "RIPPLE_DASHBOARD": "false",
    "RIPPLE_PACKAGE_GRACE_S": "20",  # an uploaded package no version names is deleted after 20 s
    # The webhook tests' receivers listen on 127.0.0.1; every other non-public target stays refused.
    "RIPPLE_WEBHOOK_ALLOW": "127.0.0.1",
}


def free_port() -> int:
    """A TCP port free right now, below the ephemeral range (:func:`ports.free_port`)."""
    return ports.free_port()


def ripple_exe() -> str:
    """The ``ripple`` console script of this virtual env."""
    return str(Path(sys.executable).with_name("ripple"))


def ripple_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A clean environment for the ``ripple`` CLI: no inherited RIPPLE_*/RAY_ADDRESS, fast timeouts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLE_") and k != "RAY_ADDRESS"}
    env.update(FAST_ENV)
    env["RAY_AUTH_MODE"] = "disabled"
    env.update(extra or {})
    return env


def run_cli(
    args: list[str], *, env: dict[str, str] | None = None, timeout_s: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``ripple ARGS`` and capture its output."""
    return subprocess.run(
        [ripple_exe(), *args],
        env=env or ripple_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd or REPO,
        check=False,
    )


@dataclass
class Instance:
    """A running Ripple: its base URL, keys, data dir and recorded state (pids, Ray address)."""

    url: str
    api_key: str
    worker_key: str
    data_dir: Path
    state: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def v2(self) -> str:
        return f"{self.url}/v2"

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        """An HTTP client with the API key."""
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=timeout_s
        )

    def create_endpoint(self, prefix: str, **fields: Any) -> str:
        """Create an endpoint for outside workers with a unique name; returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        with self.client() as c:
            r = c.post("/api/v1/endpoints", json={"name": name, "handler": None, **fields})
        assert r.status_code == 201, r.text
        return name


def _read_instance(data_dir: Path, env: dict[str, str]) -> Instance:
    state = json.loads((data_dir / "ripple.json").read_text())
    keys = json.loads((data_dir / "keys.json").read_text())
    return Instance(state["url"], keys["api_key"], keys["worker_key"], data_dir, state, env)


def start_instance(
    data_dir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
    num_gpus: int = 2,
    attempts: int = 3,
    ray_token: bool = False,
) -> Instance:
    """``ripple up --detach`` on ``data_dir``; returns once the app answers /health/ready. With
    ``ray_token`` no ``RAY_AUTH_*`` is in its environment, as a user starts it: its head makes a token.

    On a loaded 2-core machine Ray's raylet sometimes gives up on its dashboard agent (it allows 15 s for a
    Python process to import and report its ports) and ``ray start`` exits: that start is retried.
    """
    env = ripple_env(extra_env)
    if ray_token:
        for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            env.pop(name, None)
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    args = ["up", "--data-dir", str(data_dir), "--port", str(port), "--num-gpus", str(num_gpus), "--detach"]
    log_path = data_dir.parent / f"{data_dir.name}-up.log"
    for attempt in range(1, attempts + 1):
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "a") as log:
            proc = subprocess.run(
                [ripple_exe(), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=UP_TIMEOUT_S,
                cwd=REPO,
            )
        if proc.returncode == 0:
            break
        text = log_path.read_text()[offset:]
        kill_instance(data_dir)
        if attempt == attempts or "ray start exited" not in text:
            raise AssertionError(f"ripple up exited with {proc.returncode}:\n{text[-4000:]}")
    inst = _read_instance(data_dir, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{inst.url}/health/ready", timeout=5).status_code == 200:
                return inst
        time.sleep(0.5)
    raise AssertionError("ripple up returned but /health/ready never answered 200")


def _pids_of_session(sid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            if os.getsid(int(entry.name)) == sid:
                out.append(int(entry.name))
    return out


def kill_instance(data_dir: Path, state: dict[str, Any] | None = None) -> list[int]:
    """SIGKILL every process of the instance of ``data_dir``: the CLI, the Ray head's whole session (GCS,
    raylet, every Ray worker) and the embedded redis-server. Returns the pids signalled."""
    if state is None:
        with contextlib.suppress(OSError, ValueError):
            state = json.loads((data_dir / "ripple.json").read_text())
    state = state or {}
    pids: set[int] = set()
    head = state.get("ray_head_pid")
    if head:
        pids.update(_pids_of_session(int(head)))
        pids.add(int(head))
    if state.get("pid") and int(state["pid"]) != os.getpid():
        pids.add(int(state["pid"]))
    with contextlib.suppress(OSError, ValueError):
        pids.add(int((data_dir / "redis.pid").read_text().strip()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return sorted(pids)


def stop_instance(inst: Instance) -> None:
    """``ripple down``; then kill whatever is left of the instance."""
    state = inst.state
    with contextlib.suppress(subprocess.TimeoutExpired):
        run_cli(["--data-dir", str(inst.data_dir), "down"], env=inst.env, timeout_s=DOWN_TIMEOUT_S)
    kill_instance(inst.data_dir, state)


_SHARED: list[Instance] = []
"""The shared instance while it runs (empty before it starts and once it is stopped)."""


@pytest.fixture(scope="session")
def ripple_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """The shared instance: ``ripple up --num-gpus 2 --detach`` with fast timeouts; ``ripple down`` after
    the last test that uses it (see :func:`pytest_runtest_teardown`), or at the end of the session."""
    reuse = os.environ.get("RIPPLE_E2E_REUSE_DATA_DIR")
    if reuse:  # development: run against an instance started by hand with the same settings
        yield _read_instance(Path(reuse), ripple_env())
        return
    data_dir = tmp_path_factory.mktemp("ripple") / "data"
    _SHARED.append(start_instance(data_dir))
    try:
        yield _SHARED[0]
    finally:
        if _SHARED:
            stop_instance(_SHARED.pop())


@pytest.hookimpl(trylast=True)  # after the test's own teardown, which may still call the instance
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the shared instance once no test left in the run uses it, rather than at the end of the session:
    the end-to-end layer runs first, and an idle instance (its Ray head, Serve, control actors) would take
    about a tenth of a core from the integration layer after it."""
    if not _SHARED or "ripple_app" not in item.fixturenames:
        return
    items = item.session.items
    if not any("ripple_app" in later.fixturenames for later in items[items.index(item) + 1 :]):
        stop_instance(_SHARED.pop())


# Workers -------------------------------------------------------------------------------------------


@dataclass
class SdkWorker:
    """An unmodified ``runpod`` serverless worker in its own session."""

    worker_id: str
    endpoint: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its heartbeat process (its whole process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (the SDK's graceful stop), then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.kill()


def worker_env(inst: Instance, endpoint: str, worker_id: str, home: Path) -> dict[str, str]:
    """The environment of the reference note for an SDK worker of ``endpoint``."""
    base = f"{inst.v2}/{endpoint}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RIPPLE_"))}
    env.update(
        {
            "HOME": str(home),
            "RUNPOD_WEBHOOK_GET_JOB": base + "/job-take/$ID?gpu=CPU",
            "RUNPOD_WEBHOOK_POST_OUTPUT": base + "/job-done/$RUNPOD_POD_ID/$ID?gpu=CPU",
            "RUNPOD_WEBHOOK_POST_STREAM": base + "/job-stream/$RUNPOD_POD_ID/$ID?gpu=CPU",
            "RUNPOD_WEBHOOK_PING": base + "/ping/$RUNPOD_POD_ID?gpu=CPU",
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": inst.worker_key,
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def start_worker(
    inst: Instance, endpoint: str, handler: str, tmp_dir: Path, worker_id: str | None = None
) -> SdkWorker:
    """Start ``python examples/handlers.py HANDLER`` as a RunPod SDK worker of ``endpoint``."""
    worker_id = worker_id or f"w-{uuid.uuid4().hex[:8]}"
    home = tmp_dir / f"home-{worker_id}"
    home.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / f"worker-{worker_id}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(HANDLERS), handler],
            env=worker_env(inst, endpoint, worker_id, home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(tmp_dir),
            start_new_session=True,
        )
    return SdkWorker(worker_id, endpoint, proc, log_path)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., SdkWorker]]:
    """Factory ``workers(inst, endpoint, handler="echo", worker_id=None)``; every worker stopped after."""
    started: list[SdkWorker] = []

    def make(inst: Instance, endpoint: str, handler: str = "echo", worker_id: str | None = None) -> SdkWorker:
        w = start_worker(inst, endpoint, handler, tmp_path, worker_id)
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()  # a graceful SDK stop takes seconds; nothing here depends on it


# Polling helpers ------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


def job_status(inst: Instance, endpoint: str, job_id: str) -> dict[str, Any]:
    with inst.client() as c:
        r = c.get(f"/v2/{endpoint}/status/{job_id}")
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def wait_status(
    inst: Instance, endpoint: str, job_id: str, statuses: set[str] | str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll /status until the job is in one of ``statuses``; returns the status object."""
    wanted = {statuses} if isinstance(statuses, str) else statuses

    def check() -> dict[str, Any] | None:
        s = job_status(inst, endpoint, job_id)
        return s if s["status"] in wanted else None

    result: dict[str, Any] = wait_for(check, timeout_s, f"job {job_id} to be {sorted(wanted)}")
    return result
