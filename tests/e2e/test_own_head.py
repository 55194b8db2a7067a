"""Worker logs end to end: a replica whose handler prints known lines, read back through
``GET /api/v1/workers/{id}/logs`` (tail, stderr, follow), ``ripple logs WORKER|ENDPOINT`` (with ``--follow``),
and a job's detail linking the worker that ran it. Outside workers have no logs here (409).

Its own instance: reading logs goes through the Ray dashboard, which the shared instance turns off.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Instance, ripple_exe, run_cli, start_instance, stop_instance, wait_for

pytestmark = pytest.mark.timeout(300)

HANDLER = "tests.e2e.runpod_workers.printer"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    """An instance with the Ray dashboard on (worker logs are read through it) and Ray's token
    authentication on, as ``ripple up`` runs its own head."""
    env = {"RIPPLE_DASHBOARD": "true", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    inst = start_instance(tmp_path_factory.mktemp("logs") / "data", extra_env=env)
    try:
        yield inst
    finally:
        stop_instance(inst)


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
