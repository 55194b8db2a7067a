"""One instance started as a user starts it, shared by this module's tests (in order: the last stops it).

``ripple up`` with no Ray setting in its environment runs its own Ray head: the Ray dashboard on (worker logs
are read through it) and listening on 127.0.0.1 only, Ray's token authentication on with a token kept in the
data dir (Ray 2.60's GCS, raylet and agents listen on every interface whatever the node address), and here
Serve's direct ingress on (``RIPPLE_DIRECT_INGRESS_PORT``). On it:

- the dashboard is on loopback and Ray refuses a client without the token;
- the API answers on the replica's own port (direct ingress) as through the proxy;
- worker logs end to end: a replica whose handler prints known lines, read back through
  ``GET /api/v1/workers/{id}/logs`` (tail, stderr, follow), ``ripple logs WORKER|ENDPOINT`` (with
  ``--follow``), the web UI and a job's detail linking the worker that ran it; outside workers have no
  logs here (409);
- ``ripple down`` (which joins with the token to drain) stops every process of it.

One instance rather than one a test: starting one costs ~20 s of a 2-core machine.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from conftest import Instance, free_port, ripple_exe, run_cli, start_instance, stop_instance, wait_for

from orchestrator.ops import local

pytestmark = pytest.mark.timeout(300)

HANDLER = "tests.e2e.runpod_workers.printer"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """The instance: no ``RAY_AUTH_MODE`` (``ripple up`` makes its token), an empty HOME (no token of the
    user's), the dashboard on, direct ingress on a free port."""
    root = tmp_path_factory.mktemp("own-head")
    home = root / "home"
    home.mkdir()
    env = {
        "RIPPLE_DASHBOARD": "true",
        "RIPPLE_DIRECT_INGRESS_PORT": str(free_port()),
        "HOME": str(home),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    inst = start_instance(root / "data", extra_env=env, ray_token=True)
    try:
        yield inst
    finally:
        stop_instance(inst)


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


def _joins(address: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    code = f"import ray; ray.init(address='{address}'); print('joined')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def _up_log(inst: Instance) -> str:
    return (inst.data_dir.parent / f"{inst.data_dir.name}-up.log").read_text()


def test_its_dashboard_listens_on_loopback_and_its_ray_is_behind_a_token(app: Instance) -> None:
    token = app.data_dir / local.RAY_TOKEN_FILE
    assert token.stat().st_mode & 0o777 == 0o600
    assert f"Ray token:    {token.resolve()}" in _up_log(app)
    log = re.sub(r"\x1b\[[\d;]*m", "", (app.data_dir / "ray-head.log").read_text(errors="replace"))
    ((ip, dashboard_port),) = set(re.findall(r"view the dashboard at\s*\n.*? -- +([\d.]+):(\d+)", log))
    assert ip == "127.0.0.1"
    dashboard = [a for a, p in _session_listeners(app.state["ray_head_pid"]) if p == int(dashboard_port)]
    assert dashboard and set(dashboard) == {"127.0.0.1"}, dashboard
    assert httpx.get(f"http://127.0.0.1:{dashboard_port}/api/jobs/", timeout=10).status_code == 401

    client = {k: v for k, v in app.env.items() if not k.startswith("RAY_AUTH")}
    refused = _joins(app.state["ray_address"], {**client, "RAY_AUTH_MODE": "token"})
    assert refused.returncode != 0 and "joined" not in refused.stdout, refused.stdout
    with_token = {**client, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    allowed = _joins(app.state["ray_address"], with_token)
    assert allowed.returncode == 0 and "joined" in allowed.stdout, allowed.stderr[-3000:]


def test_direct_ingress_serves_the_api_without_the_proxy(app: Instance) -> None:
    """``ripple up`` reports the API replica's own URL (Serve's direct ingress), which answers as the proxy
    does: keys, request ids, jobs; the proxy still serves its port."""
    direct = f"http://127.0.0.1:{app.env['RIPPLE_DIRECT_INGRESS_PORT']}"
    assert app.state["direct_url"] == direct
    assert f"direct:       {direct}" in _up_log(app)
    headers = {"Authorization": f"Bearer {app.api_key}", "X-Request-ID": "direct-1"}
    with httpx.Client(base_url=direct, headers=headers, timeout=60) as c:
        spec = {"name": "direct", "handler": "examples.handlers:echo", "gpus": 0, "minReplicas": 1}
        assert c.post("/api/v1/endpoints", json=spec).status_code in (200, 201)
        reply = c.post("/v2/direct/runsync", json={"input": {"n": 1}})
        assert reply.status_code == 200 and reply.json()["output"] == {"echo": {"n": 1}}, reply.text
        assert reply.headers["x-request-id"] == "direct-1"
        assert c.delete("/api/v1/endpoints/direct").status_code == 200
    assert httpx.post(f"{direct}/v2/direct/run", json={"input": 1}).status_code == 401
    assert httpx.get(f"{app.url}/health/ready").status_code == 200
    status = run_cli(["--data-dir", str(app.data_dir), "status"], env=app.env, timeout_s=60)
    assert f"Direct ingress: {direct}" in status.stdout, status.stdout + status.stderr


def _cli(inst: Instance, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(["--data-dir", str(inst.data_dir), *args], env=inst.env, timeout_s=timeout_s)


def _run(inst: Instance, endpoint: str, tag: str, lines: int = 3) -> dict[str, Any]:
    with inst.client(timeout_s=150) as c:
        r = c.post(f"/v2/{endpoint}/runsync?wait=120000", json={"input": {"tag": tag, "lines": lines}})
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text
    out: dict[str, Any] = r.json()
    return out


def _logs(inst: Instance, worker_id: str, **params: Any) -> httpx.Response:
    with inst.client() as c:
        return c.get(f"/api/v1/workers/{worker_id}/logs", params=params)


def test_replica_logs_through_the_route_the_cli_and_the_job_detail(app: Instance) -> None:
    endpoint = app.create_endpoint("printer", handler=HANDLER, gpus=0, minReplicas=1, maxReplicas=1)
    job = _run(app, endpoint, "alpha")
    worker_id = job["workerId"]

    # The job's detail links the worker's logs.
    with app.client() as c:
        detail = c.get(f"/api/v1/jobs/{job['id']}").json()
    assert detail["workerId"] == worker_id and detail["workerLogs"] == f"/api/v1/workers/{worker_id}/logs"

    # The worker record carries the replica's Ray actor id.
    with app.client() as c:
        (view,) = [w for w in c.get("/api/v1/workers").json()["workers"] if w["workerId"] == worker_id]
    assert len(view["actorId"]) == 32

    # The route: the last lines of stdout, Ray's marker lines dropped; stderr on request.
    r = _logs(app, worker_id, tail=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lines"] == ["printer: alpha line 0", "printer: alpha line 1", "printer: alpha line 2"]
    assert body["actorId"] == view["actorId"] and body["endpoint"] == endpoint and body["stream"] == "stdout"
    everything = _logs(app, worker_id, tail=-1).json()["lines"]
    assert "printer: loaded" in everything and everything[-3:] == body["lines"]
    assert not any(line.startswith((":actor_name:", ":job_id:")) for line in everything)
    err = _logs(app, worker_id, tail=50, stream="stderr").json()["lines"]
    assert "printer: alpha on stderr" in err

    # ripple logs WORKER: the lines as printed; ripple logs ENDPOINT: prefixed with the worker id.
    out = _cli(app, "logs", worker_id, "--tail", "3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "printer: alpha line 0",
        "printer: alpha line 1",
        "printer: alpha line 2",
    ]
    out = _cli(app, "logs", endpoint, "--tail", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        f"[{worker_id}] printer: alpha line 1",
        f"[{worker_id}] printer: alpha line 2",
    ]
    out = _cli(app, "logs", "no-such-thing")
    assert out.returncode == 1 and "no worker or endpoint named 'no-such-thing'" in out.stderr


def test_follow_streams_new_lines_over_http_and_the_cli(app: Instance) -> None:
    endpoint = app.create_endpoint("follow", handler=HANDLER, gpus=0, minReplicas=1, maxReplicas=1)
    worker_id = _run(app, endpoint, "warm", lines=1)["workerId"]

    got: queue.Queue[str] = queue.Queue()
    proc = subprocess.Popen(
        [ripple_exe(), "--data-dir", str(app.data_dir), "logs", endpoint, "--follow", "--tail", "1"],
        env=app.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []

    def cli_printed(line: str) -> bool:
        with contextlib.suppress(queue.Empty):
            while True:
                seen.append(got.get_nowait())
        return f"[{worker_id}] {line}" in seen

    try:
        with (
            app.client(timeout_s=60) as c,
            c.stream("GET", f"/api/v1/workers/{worker_id}/logs", params={"follow": "true", "tail": 1}) as r,
        ):
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            lines = r.iter_lines()
            assert next(lines) == "printer: warm line 0"
            # The CLI's stream is open too once it printed its tail (a fixed wait was too short under load,
            # and the CLI, opening after the new lines, printed only the last as its tail).
            wait_for(lambda: cli_printed("printer: warm line 0"), 30, "ripple logs --follow's tail")
            _run(app, endpoint, "later", lines=2)
            assert next(lines) == "printer: later line 0"
            assert next(lines) == "printer: later line 1"

        wait_for(
            lambda: cli_printed("printer: later line 1"), 30, "ripple logs --follow to print the new lines"
        )
        assert f"[{worker_id}] printer: later line 0" in seen
    finally:
        proc.kill()
        proc.wait(10)


def test_outside_workers_and_unknown_workers_have_no_logs(app: Instance) -> None:
    endpoint = app.create_endpoint("outside")
    worker = httpx.get(
        f"{app.v2}/{endpoint}/job-take/sdk-worker-1", headers={"Authorization": app.worker_key}, timeout=30
    )
    assert worker.status_code in (200, 204), worker.text
    r = _logs(app, "sdk-worker-1")
    assert r.status_code == 409 and "outside worker" in r.json()["error"]
    out = _cli(app, "logs", endpoint)
    assert out.returncode == 1 and "outside workers" in out.stderr
    r = _logs(app, "never-seen")
    assert r.status_code == 404 and "not found" in r.json()["error"]
    assert _logs(app, "x", tail=-2).status_code == 422


CHROMIUM = Path("/usr/bin/chromium")


def test_web_ui_worker_page_shows_the_log_and_the_job_page_links_it(app: Instance) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (run .ci/install-browser.sh)")
    from playwright.sync_api import expect, sync_playwright

    endpoint = app.create_endpoint("uilogs", handler=HANDLER, gpus=0, minReplicas=1, maxReplicas=1)
    job = _run(app, endpoint, "browser")
    worker_id = job["workerId"]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{app.url}/ui/login")
            page.fill("#api_key", app.api_key)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Dashboard")

            # The job's page links the worker that ran it; the worker's page shows what it printed.
            page.goto(f"{app.url}/ui/#/jobs/{job['id']}")
            page.click(f"a[data-worker-link='{worker_id}']")
            expect(page.locator("h1")).to_contain_text(worker_id)
            expect(page.locator("#worker-log")).to_contain_text("printer: browser line 2")
            page.select_option("#log-stream", "stderr")
            expect(page.locator("#worker-log")).to_contain_text("printer: browser on stderr")
            # Live: a line printed later shows up without a reload.
            page.select_option("#log-stream", "stdout")
            _run(app, endpoint, "afterwards", lines=1)
            expect(page.locator("#worker-log")).to_contain_text("printer: afterwards line 0")
        finally:
            browser.close()
    assert not errors, errors


def test_down_stops_every_process_of_the_instance(app: Instance) -> None:
    """Last: ``ripple down`` joins with the token kept in the data dir, drains and stops the head."""
    head = app.state["ray_head_pid"]
    down = run_cli(["down", "--data-dir", str(app.data_dir)], env=app.env, timeout_s=240)
    assert down.returncode == 0 and "Ripple stopped." in down.stdout, down.stdout + down.stderr[-3000:]
    assert "graceful stop incomplete" not in down.stderr, down.stderr[-3000:]
    assert wait_for(
        lambda: not psutil.pid_exists(head) or psutil.Process(head).status() == "zombie", 30, "the head gone"
    )
