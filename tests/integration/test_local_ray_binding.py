"""``ripple up``'s own Ray head, as a user starts it (no RAY_AUTH_MODE in the environment): its dashboard
listens on 127.0.0.1 only, and since Ray 2.60's GCS, raylet and agents listen on every interface whatever
the node address, Ray's token authentication is on with a token kept in the data dir: a Ray client
without it cannot join, one with it can, and ``ripple down`` (which joins to drain) still works.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from orchestrator.ops import local
from tests.integration.cluster_fixtures import free_port, wait_for

pytestmark = pytest.mark.timeout(300)


def _session_listeners(leader_pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP listener of the processes in ``leader_pid``'s session."""
    sid = os.getsid(leader_pid)
    pids = set()
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getsid(p.pid) == sid:
                pids.add(p.pid)
    return [
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    ]


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RIPPLE_", "RAY_AUTH")) and k != "RAY_ADDRESS"
    }
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", **extra)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _joins(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"import ray; ray.init(address='{address}'); print('joined')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_ripple_up_keeps_its_dashboard_on_loopback_and_its_ray_behind_a_token(tmp_path: Path) -> None:
    data_dir, home = tmp_path / "data", tmp_path / "home"
    home.mkdir()
    ripple = str(Path(sys.executable).with_name("ripple"))
    port = free_port()
    up = [ripple, "up", "--detach", "--insecure", "--num-cpus", "1", "--data-dir", str(data_dir)]
    started = subprocess.run(
        [*up, "--port", str(port)], env=_env(home), capture_output=True, text=True, timeout=240
    )
    state = local.read_state(data_dir)
    try:
        assert started.returncode == 0, started.stdout[-3000:] + started.stderr[-3000:]
        assert state is not None and state.ray_head_pid
        wait_for(lambda: httpx.get(f"{state.url}/health/ready", timeout=5).status_code == 200, 60, "ready")

        token = data_dir / local.RAY_TOKEN_FILE
        assert token.stat().st_mode & 0o777 == 0o600
        assert f"Ray token:    {token.resolve()}" in started.stdout
        log = re.sub(r"\x1b\[[\d;]*m", "", (data_dir / "ray-head.log").read_text(errors="replace"))
        ((ip, dashboard_port),) = set(re.findall(r"view the dashboard at\s*\n.*? -- +([\d.]+):(\d+)", log))
        assert ip == "127.0.0.1"
        dashboard = [a for a, p in _session_listeners(state.ray_head_pid) if p == int(dashboard_port)]
        assert dashboard and set(dashboard) == {"127.0.0.1"}, dashboard
        assert httpx.get(f"http://127.0.0.1:{dashboard_port}/api/jobs/", timeout=10).status_code == 401

        refused = _joins(state.ray_address, _env(home, RAY_AUTH_MODE="token"))
        assert refused.returncode != 0 and "joined" not in refused.stdout, refused.stdout
        allowed = _joins(state.ray_address, _env(home, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token)))
        assert allowed.returncode == 0 and "joined" in allowed.stdout, allowed.stderr[-3000:]
    finally:
        down = subprocess.run(
            [ripple, "down", "--data-dir", str(data_dir)],
            env=_env(home),
            capture_output=True,
            text=True,
            timeout=240,
        )
        if state is not None and state.ray_head_pid and psutil.pid_exists(state.ray_head_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(state.ray_head_pid, 9)
    assert down.returncode == 0 and "Ripple stopped." in down.stdout, down.stdout + down.stderr[-3000:]
    assert "graceful stop incomplete" not in down.stderr, down.stderr[-3000:]
    assert (
        not psutil.pid_exists(state.ray_head_pid) or psutil.Process(state.ray_head_pid).status() == "zombie"
    )
