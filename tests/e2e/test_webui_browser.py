"""The web UI in a real headless Chromium against a real ``ripple up``.

Covers: login (wrong key, then the right one), creating an endpoint (with a server-side validation error shown
next to its field), submitting jobs from the UI and seeing one complete through an outside worker speaking
the worker protocol, cancelling and retrying a job, editing an endpoint, draining a worker, and logging out.
Screenshots of every page go to ``$RIPPLE_SCREENSHOT_DIR`` (or a temporary folder).

Needs Debian's chromium at /usr/bin/chromium (``.ci/install-browser.sh``) and Playwright's Python package;
never downloads a browser.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import ports

pytestmark = pytest.mark.timeout(900)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT_S = 300.0
ENDPOINT = "e2e-echo"


@dataclass(frozen=True)
class Instance:
    base_url: str
    api_key: str
    worker_key: str
    data_dir: Path


def _ripple_command() -> list[str]:
    """The ``ripple`` script next to this interpreter, else the same entry point run by it."""
    script = Path(sys.executable).with_name("ripple")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from orchestrator.cli import main; sys.exit(main())"]


def _free_port() -> int:
    return ports.free_port()


def _wait_ready(base_url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ripple up exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            answer = httpx.get(f"{base_url}/health/ready", timeout=5)
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(1.0)
    log = log_path.read_text()[-4000:]
    raise AssertionError(f"ripple up not ready in {READY_TIMEOUT_S} s (last: {last}):\n{log}")


def _stop(proc: subprocess.Popen[bytes], data_dir: Path) -> None:
    with contextlib.suppress(Exception):
        subprocess.run(
            [*_ripple_command(), "down", "--data-dir", str(data_dir)],
            timeout=240,
            capture_output=True,
            check=False,
        )
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def ripple(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (run .ci/install-browser.sh)")
    data_dir = tmp_path_factory.mktemp("ripple-data")
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIPPLE_") and k != "RAY_ADDRESS"}
    env |= {"RIPPLE_WEBHOOK_ALLOW": "127.0.0.1", "RIPPLE_WEBHOOK_MAX_ATTEMPTS": "1"}  # a webhook that fails
    command = [*_ripple_command(), "up", "--data-dir", str(data_dir), "--port", str(port), "--num-gpus", "2"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(base_url, proc, log_path)
        keys = json.loads((data_dir / "keys.json").read_text())
        yield Instance(base_url, keys["api_key"], keys["worker_key"], data_dir)
    finally:
        _stop(proc, data_dir)


class OutsideWorker:
    """A tiny worker speaking the RunPod worker protocol over HTTP: take a job, answer with an echo."""

    def __init__(self, instance: Instance, endpoint: str, worker_id: str) -> None:
        self.url = f"{instance.base_url}/v2/{endpoint}"
        self.worker_id = worker_id
        self.headers = {"Authorization": instance.worker_key}
        self.done: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"worker-{worker_id}", daemon=True)

    def start(self) -> OutsideWorker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=120) as http:
            while not self._stop.is_set():
                try:
                    self._step(http)
                except httpx.HTTPError as exc:
                    self.errors.append(repr(exc))
                    time.sleep(0.5)

    def _step(self, http: httpx.Client) -> None:
        taken = http.get(f"{self.url}/job-take/{self.worker_id}", params={"job_in_progress": "0"})
        if taken.status_code == 204:
            return
        if taken.status_code != 200:
            self.errors.append(f"take answered {taken.status_code}: {taken.text[:200]}")
            time.sleep(0.5)
            return
        job: dict[str, Any] = taken.json()
        output = {"echo": job.get("input"), "worker": self.worker_id}
        done = http.post(f"{self.url}/job-done/{self.worker_id}/{job['id']}", json={"output": output})
        if done.status_code == 200:
            self.done.append(job["id"])
        else:
            self.errors.append(f"done answered {done.status_code}: {done.text[:200]}")


@contextlib.contextmanager
def _page() -> Iterator[Any]:
    """A page of a fresh headless Chromium; once the block is done, no script error may have been raised on
    it."""
    from playwright.sync_api import sync_playwright

    page_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            yield page
        finally:
            browser.close()
    assert page_errors == [], page_errors


@contextlib.contextmanager
def _logged_in(ripple: Instance, key: str | None = None) -> Iterator[Any]:
    """A :func:`_page` logged in with ``key`` (default: the admin key), on the dashboard."""
    from playwright.sync_api import expect

    with _page() as page:
        page.goto(f"{ripple.base_url}/ui/login")
        page.fill("#api_key", key or ripple.api_key)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_have_text("Dashboard")
        yield page


def _snap(page: Any, path: Path, *, full_page: bool = True) -> None:
    """A screenshot from the top of the page (the sidebar is sticky, so scrolling would shift it)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("RIPPLE_SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_operator_workflow_in_a_real_browser(ripple: Instance, shots: Path) -> None:
    from playwright.sync_api import expect

    worker = OutsideWorker(ripple, ENDPOINT, "e2e-worker-1")
    try:
        with _page() as page:
            # Login: the UI sends us to the form; a wrong key is refused with a message.
            page.goto(f"{ripple.base_url}/ui/")
            expect(page).to_have_url(f"{ripple.base_url}/ui/login")
            page.fill("#api_key", "not-the-key")
            page.click("button[type=submit]")
            expect(page.locator(".login-error")).to_contain_text("not valid")
            _snap(page, shots / "01-login-wrong-key.png", full_page=False)
            page.fill("#api_key", ripple.api_key)
            page.click("button[type=submit]")
            expect(page.locator("h1")).to_have_text("Dashboard")
            expect(page.locator("#auth-banner")).to_be_hidden()
            assert ripple.api_key not in page.content()
            _snap(page, shots / "02-dashboard-empty.png")

            # Create an endpoint: first with a value the server refuses, shown next to its field.
            page.click("a[data-nav=endpoints]")
            page.click("text=New endpoint")
            page.fill("#f-name", ENDPOINT)
            page.fill("#f-gpus", "100")
            page.fill("#f-priority", "70")
            page.fill("#f-maxRetries", "2")
            expect(page.locator("pre.json")).to_contain_text('"gpus": 100')
            page.click("button:has-text('Create endpoint')")
            expect(page.locator("[data-error-for=gpus]")).to_be_visible()
            _snap(page, shots / "03-endpoint-validation.png")
            page.fill("#f-gpus", "0")
            page.click("button:has-text('Create endpoint')")
            expect(page.locator("h1")).to_have_text(f"Endpoint {ENDPOINT}")
            created = httpx.get(
                f"{ripple.base_url}/api/v1/endpoints/{ENDPOINT}",
                headers={"Authorization": f"Bearer {ripple.api_key}"},
            ).json()
            assert created["priority"] == 70 and created["gpus"] == 0 and created["maxRetries"] == 2

            # Edit it: only the changed field is sent.
            page.fill("#f-priority", "80")
            expect(page.locator("pre.json")).to_contain_text("PATCH")
            page.click("button:has-text('Save changes')")
            expect(page.locator(".toast", has_text="saved")).to_be_visible()
            _snap(page, shots / "04-endpoint-edit.png")

            # A job submitted with no worker yet stays queued; cancel it from the list.
            page.goto(f"{ripple.base_url}/ui/#/jobs?endpoint={ENDPOINT}")
            page.fill("#submit-input", '{"prompt": "cancel me"}')
            page.click("button:has-text('Submit job')")
            cancelled_id = page.locator("#submitted a").inner_text()
            row = page.locator("tr", has=page.locator(f'a[title="{cancelled_id}"]'))
            expect(row.locator("[data-state=IN_QUEUE]")).to_be_visible()
            row.locator(f'button[data-cancel="{cancelled_id}"]').click()
            expect(row.locator("[data-state=CANCELLED]")).to_be_visible()

            # With a worker running, a submitted job completes and its output shows.
            worker.start()
            page.fill("#submit-input", '{"prompt": "hello from the browser"}')
            page.click("button:has-text('Submit job')")
            expect(page.locator("#submitted a")).not_to_have_text(cancelled_id)
            done_id = page.locator("#submitted a").inner_text()
            page.click("#submitted a")
            expect(page.locator(".page-head .id")).to_have_text(done_id)
            expect(page.locator(".page-head [data-state=COMPLETED]")).to_be_visible(timeout=90_000)
            expect(page.locator("pre.json").nth(1)).to_contain_text("hello from the browser")
            _snap(page, shots / "05-job-completed.png")

            # Retry the cancelled job from its page: the worker completes it too.
            page.goto(f"{ripple.base_url}/ui/#/jobs/{cancelled_id}")
            page.click(f'button[data-retry="{cancelled_id}"]')
            expect(page.locator(".page-head [data-state=COMPLETED]")).to_be_visible(timeout=90_000)
            page.goto(f"{ripple.base_url}/ui/#/jobs")
            expect(page.locator("[data-state=COMPLETED]").first).to_be_visible()
            _snap(page, shots / "06-jobs.png")

            # Drain the worker from the workers page.
            page.click("a[data-nav=workers]")
            drain = page.locator(f'button[data-drain="{worker.worker_id}"]')
            expect(drain).to_be_enabled()
            drain.click()
            expect(page.locator("#confirm")).to_be_visible()
            _snap(page, shots / "07-drain-confirm.png", full_page=False)
            page.click("#confirm-ok")
            drained_row = page.locator("tr", has=drain)
            expect(drained_row.locator('[data-state="draining" i]').first).to_be_visible()
            expect(drain).to_be_disabled()
            _snap(page, shots / "08-workers.png")

            # With the only worker draining, new jobs wait: the dashboard shows them queued.
            for n in range(3):
                queued = httpx.post(
                    f"{ripple.base_url}/v2/{ENDPOINT}/run",
                    json={"input": {"n": n}},
                    headers={"Authorization": f"Bearer {ripple.api_key}"},
                )
                assert queued.status_code == 200, queued.text

            # A Ray-backed endpoint: the autoscaler keeps its one replica, which shows with its cold start.
            ray_endpoint = httpx.post(
                f"{ripple.base_url}/api/v1/endpoints",
                json={"name": "e2e-ray", "handler": "examples.handlers:echo", "gpus": 1, "minReplicas": 1},
                headers={"Authorization": f"Bearer {ripple.api_key}"},
                timeout=30,  # a create with a handler answers once its pool is up: up to 10 s by design
            )
            assert ray_endpoint.status_code == 201, ray_endpoint.text
            page.click("a[data-nav=workers]")
            ray_row = page.locator("tr", has_text="e2e-ray")
            expect(ray_row.locator('[data-state="idle" i]')).to_be_visible(timeout=180_000)
            _snap(page, shots / "08b-workers-ray.png")

            # The dashboard and autoscaler pages render with live data (or say what is not available).
            page.click("a[data-nav=autoscaler]")
            expect(page.locator("h1")).to_contain_text("Autoscaler")
            page.wait_for_timeout(1500)
            _snap(page, shots / "09-autoscaler.png")
            page.click("a[data-nav=dashboard]")
            expect(page.locator(".chart svg")).to_have_count(2, timeout=30_000)
            page.wait_for_timeout(6000)  # a few more samples for the charts and the throughput
            expect(page.locator(".stat", has_text="Queued jobs").locator(".value")).to_have_text("3")
            # The embedded Redis has no maxmemory: the job store's use alone, in MiB.
            store_stat = page.locator(".stat", has_text="Job store").locator(".value")
            expect(store_stat).to_have_text(re.compile(r"^\d+ MiB$"))
            _snap(page, shots / "10-dashboard.png")
            assert ripple.api_key not in page.content()
            for name in ("app.js", "api.js", "style.css"):
                asset = page.request.get(f"{ripple.base_url}/ui/static/{name}")
                assert asset.ok and ripple.api_key not in asset.text(), name

            # Delete the Ray-backed endpoint from the list, through the confirmation dialog.
            page.click("a[data-nav=endpoints]")
            page.locator('button[data-delete="e2e-ray"]').click()
            expect(page.locator("#confirm")).to_be_visible()
            expect(page.locator("#confirm-title")).to_contain_text("e2e-ray")
            page.click("#confirm-ok")
            expect(page.locator(".toast", has_text="e2e-ray deleted")).to_be_visible()
            expect(page.locator('button[data-delete="e2e-ray"]')).to_have_count(0)
            expect(page.locator(f'button[data-delete="{ENDPOINT}"]')).to_have_count(1)
            gone = httpx.get(
                f"{ripple.base_url}/api/v1/endpoints/e2e-ray",
                headers={"Authorization": f"Bearer {ripple.api_key}"},
            )
            assert gone.status_code == 404, gone.text
            _snap(page, shots / "11-endpoint-deleted.png")

            # Logging out ends the session: the API no longer accepts the browser.
            page.click("#logout")
            expect(page).to_have_url(f"{ripple.base_url}/ui/login")
            status = page.evaluate(
                "fetch('/api/v1/endpoints', {credentials: 'same-origin'}).then(r => r.status)"
            )
            assert status == 401
    finally:
        worker.stop()
    assert worker.done, worker.errors


def test_a_read_key_sees_everything_and_changes_nothing(ripple: Instance, shots: Path) -> None:
    """Logged in with a ``read`` key: every page renders, every change control is hidden, the Audit page
    lists changes, and a change sent anyway (with the session's CSRF token) is refused with 403."""
    from playwright.sync_api import expect

    admin = {"Authorization": f"Bearer {ripple.api_key}"}
    made = httpx.post(f"{ripple.base_url}/api/v1/endpoints", json={"name": "e2e-readonly"}, headers=admin)
    assert made.status_code == 201, made.text
    created = httpx.post(
        f"{ripple.base_url}/api/v1/keys", json={"name": "e2e-dashboard", "scope": "read"}, headers=admin
    )
    assert created.status_code == 201, created.text
    read_key = created.json()["key"]
    with _logged_in(ripple, read_key) as page:
        expect(page.locator("#session-key")).to_contain_text("e2e-dashboard (read, read-only)")
        expect(page.locator("a:has-text('New endpoint')")).to_be_hidden()

        page.click("a[data-nav=endpoints]")
        expect(page.locator("tr", has_text="e2e-readonly")).to_be_visible()
        expect(page.locator('button[data-delete="e2e-readonly"]')).to_be_hidden()
        expect(page.locator("a:has-text('New endpoint')")).to_be_hidden()
        page.locator("tr", has_text="e2e-readonly").locator("a:has-text('View')").click()
        expect(page.locator("#f-priority")).to_be_disabled()
        expect(page.locator("button:has-text('Save changes')")).to_be_hidden()
        expect(page.locator("#delete-endpoint")).to_have_count(0)
        _snap(page, shots / "20-read-only-endpoint.png")

        page.click("a[data-nav=jobs]")
        expect(page.locator("#submit-job")).to_be_hidden()
        page.click("a[data-nav=autoscaler]")
        expect(page.locator("h1")).to_contain_text("Autoscaler")
        expect(page.locator("#autoscaler-disable")).to_be_hidden()
        page.click("a[data-nav=audit]")
        row = page.locator("tr", has_text="key.create").filter(has_text="e2e-dashboard")
        expect(row).to_be_visible()
        expect(page.locator("tr", has_text="endpoint.create").first).to_be_visible()
        _snap(page, shots / "21-audit.png")

        # The server refuses a change sent anyway, with the session's own CSRF token.
        status = page.evaluate(
            """async () => {
                const s = await (await fetch('/ui/session')).json();
                const r = await fetch('/api/v1/autoscaler/disable',
                    {method: 'POST', headers: {'X-CSRF-Token': s.csrfToken}, credentials: 'same-origin'});
                return r.status;
            }"""
        )
        assert status == 403
        assert read_key not in page.content()


def test_endpoint_page_versions_deploy_and_rollback(ripple: Instance, shots: Path, tmp_path: Path) -> None:
    """The endpoint page lists versions with their state, deploys an uploaded zip as a new version (the
    package stored through POST /api/v1/packages), and rolls back to an earlier version."""
    import io
    import zipfile

    from playwright.sync_api import expect

    admin = {"Authorization": f"Bearer {ripple.api_key}"}
    name = "e2e-versions"
    made = httpx.post(f"{ripple.base_url}/api/v1/endpoints", json={"name": name}, headers=admin)
    assert made.status_code == 201, made.text
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("worker.py", "def handler(job):\n    return job['input']\n")
        zf.writestr("requirements.txt", "inflection==0.5.1\n")
    code = tmp_path / "code.zip"
    code.write_bytes(buf.getvalue())
    with _logged_in(ripple) as page:
        page.goto(f"{ripple.base_url}/ui/#/endpoints/{name}")
        versions = page.locator("#versions")
        expect(versions.locator("tr", has_text="v1").locator("[data-state=active]")).to_be_visible()
        page.set_input_files("#deploy-zip", str(code))
        page.click("button:has-text('Deploy')")
        expect(page.locator(".toast", has_text="version 2")).to_be_visible()
        expect(versions.locator("tr", has_text="v2").locator("[data-state=active]")).to_be_visible()
        expect(versions.locator("tr", has_text="v1").locator("[data-state=stale]")).to_be_visible()
        _snap(page, shots / "30-endpoint-versions.png")
        got = httpx.get(f"{ripple.base_url}/api/v1/endpoints/{name}", headers=admin).json()
        assert got["version"] == 2 and got["runtimeEnv"]["working_dir"].startswith("gcs://_ray_pkg_")
        assert got["runtimeEnv"]["pip"] == ["inflection==0.5.1"] and got["codeDigest"].startswith("sha256:")

        versions.locator('button[data-rollback="1"]').click()
        expect(page.locator(".toast", has_text="as v3")).to_be_visible()
        expect(versions.locator("tr", has_text="v3")).to_be_visible()
        back = httpx.get(f"{ripple.base_url}/api/v1/endpoints/{name}", headers=admin).json()
        assert back["version"] == 3 and back["runtimeEnv"] is None


def test_endpoint_page_says_webhooks_did_not_arrive(ripple: Instance, shots: Path) -> None:
    """A job whose webhook never arrived (nothing listens at its address) is named on its endpoint's page,
    with why; the job's result is still there."""
    from playwright.sync_api import expect

    admin = {"Authorization": f"Bearer {ripple.api_key}"}
    worker = {"Authorization": ripple.worker_key}
    name = "e2e-hooks"
    base = f"{ripple.base_url}/v2/{name}"
    assert httpx.post(f"{ripple.base_url}/api/v1/endpoints", json={"name": name}, headers=admin).is_success
    nobody = f"http://127.0.0.1:{_free_port()}/hook"
    submitted = httpx.post(f"{base}/run", json={"input": {"n": 1}, "webhook": nobody}, headers=admin)
    assert submitted.status_code == 200, submitted.text
    job = httpx.get(f"{base}/job-take/w-hooks", headers=worker, timeout=30).json()
    assert job["id"] == submitted.json()["id"]
    assert httpx.post(f"{base}/job-done/w-hooks/{job['id']}", json={"output": 1}, headers=worker).is_success
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = httpx.get(f"{ripple.base_url}/api/v1/stats", headers=admin).json()["endpoints"]
        if (stats.get(name) or {}).get("webhooks", {}).get("failed"):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the delivery never failed: {stats.get(name)}")
    with _logged_in(ripple) as page:
        page.goto(f"{ripple.base_url}/ui/#/endpoints/{name}")
        notice = page.locator("#endpoint-webhooks")
        expect(notice).to_contain_text(
            "1 of 1 webhook deliveries in the last 60 min did not arrive (1 failed after every attempt)"
        )
        expect(notice).to_contain_text(f"latest: job {job['id']} failed: ConnectError after 1 attempt")
        expect(notice).not_to_contain_text("attempts")
        _snap(page, shots / "40-endpoint-webhooks.png")
