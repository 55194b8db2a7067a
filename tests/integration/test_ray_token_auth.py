"""Ripple on a Ray cluster with Ray's token authentication on, as the KubeRay manifests run it.

Every node gets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` in its environment (the pods get them from the
Secret ripple-ray-auth). Without the token the job API, the GCS and ``ray job submit`` refuse; with it,
``python -m orchestrator deploy`` submitted through the ``ray job submit`` CLI deploys Ripple, whose own
actors (queue, pool, a replica on the GPU worker node) then serve a job end to end.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.cluster_fixtures import (
    REPO,
    WORKING_DIR_EXCLUDES,
    LocalCluster,
    NodeProc,
    RippleOnCluster,
    base_env,
    free_port,
    ray_exe,
    wait_for,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

TOKEN = secrets.token_hex(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class TokenCluster(LocalCluster):
    """A :class:`LocalCluster` whose nodes run with token auth; it observes itself through the dashboard
    with the token (the fixtures' GCS client runs without one)."""

    def _job_api_up(self, head: NodeProc) -> bool:
        if not head.running():
            raise AssertionError(f"ray start --head exited with {head.proc.returncode}:\n{head.log_tail()}")
        try:
            return httpx.get(f"{self.dashboard_url}/api/version", headers=AUTH, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    worker_node_id: str = ""

    def alive_nodes(self) -> dict[str, dict[str, float]]:
        r = httpx.get(f"{self.dashboard_url}/nodes?view=summary", headers=AUTH, timeout=10)
        r.raise_for_status()
        rows = r.json()["data"]["summary"]
        return {n["raylet"]["nodeId"]: {} for n in rows if n["raylet"].get("state") == "ALIVE"}


def client_env(home: Path, token: str | None) -> dict[str, str]:
    """A client's environment: token mode, the token when given, and a HOME without ~/.ray/auth_token."""
    env = base_env({"RAY_AUTH_MODE": "token", "HOME": str(home)})
    env.pop("RAY_AUTH_TOKEN", None)
    if token is not None:
        env["RAY_AUTH_TOKEN"] = token
    return env


@pytest.fixture(scope="module")
def cluster() -> Iterator[TokenCluster]:
    c = TokenCluster(env_extra={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN})
    try:
        c.start_head()
        _, c.worker_node_id = c.add_worker(num_gpus=1, num_cpus=1)
        yield c
    finally:
        c.teardown()


def test_without_the_token_ray_refuses(cluster: TokenCluster, tmp_path: Path) -> None:
    jobs = f"{cluster.dashboard_url}/api/jobs/"
    assert httpx.get(jobs, timeout=10).status_code == 401
    assert httpx.get(jobs, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 403
    assert httpx.get(jobs, headers=AUTH, timeout=10).status_code == 200

    # Three clients at once (each a Python process importing Ray).
    submit = [ray_exe(), "job", "submit", "--address", cluster.dashboard_url, "--", "echo", "hello"]
    connect = [sys.executable, "-c", f"import ray; ray.init(address='{cluster.address}'); print('joined')"]
    started = [
        _start(submit, client_env(tmp_path, None)),
        # Refused, a driver tries the GCS again a second apart, ~20 times: two tries show the refusal.
        _start(connect, {**client_env(tmp_path, "not-the-token"), "RAY_gcs_server_port_wait_time_s": "2"}),
        _start(connect, client_env(tmp_path, TOKEN)),
    ]
    refused, wrong, right = (_finish(proc) for proc in started)
    assert refused.returncode != 0, refused.stdout
    assert "uthentication" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    assert wrong.returncode != 0 and "joined" not in wrong.stdout, wrong.stdout
    assert "InvalidAuthToken" in wrong.stderr, wrong.stderr[-2000:]
    assert right.returncode == 0 and "joined" in right.stdout, right.stdout + right.stderr[-2000:]


def _start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """The finished run of ``proc`` (killed past ``timeout_s``, which fails the test)."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args!r} ran past {timeout_s:g} s:\n{out}\n{err[-2000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_deploy_via_ray_job_submit_and_ripples_actors_work_with_the_token(
    cluster: TokenCluster, tmp_path: Path
) -> None:
    ripple = RippleOnCluster(
        cluster, port=free_port(), data_dir=Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))
    )
    try:
        cmd = [
            ray_exe(),
            "job",
            "submit",
            "--address",
            cluster.dashboard_url,
            "--working-dir",
            str(REPO),
            "--runtime-env-json",
            json.dumps({"excludes": WORKING_DIR_EXCLUDES}),
            "--",
            "python",
            "-m",
            "orchestrator",
            "deploy",
            "--data-dir",
            str(ripple.data_dir),
            "--port",
            str(ripple.port),
            "--insecure",
        ]
        done = subprocess.run(
            cmd, env=client_env(tmp_path, TOKEN), capture_output=True, text=True, timeout=400
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0 and "Ripple deployed" in out, out[-4000:]
        wait_for(ripple.ready, 120, "/health/ready")

        ripple.create_endpoint("authed", minReplicas=0, maxReplicas=1, concurrency=1)
        with ripple.client(timeout_s=300) as c:
            r = c.post("/v2/authed/runsync", json={"input": {"hello": "token"}}, params={"wait": 240000})
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] != "COMPLETED":  # runsync may hand back an id while the replica cold-starts
            body = wait_for(
                lambda: (j := ripple.job(body["id"]))["status"] not in ("IN_QUEUE", "IN_PROGRESS") and j,
                240,
                "the job to finish",
                1.0,
            )
        assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"hello": "token"}}, body
        (worker,) = [w for w in ripple.workers("authed") if w["state"] != "stopped"]
        assert worker["nodeId"] == cluster.worker_node_id  # the replica ran on the GPU worker node
    finally:
        ripple.stop_store()
