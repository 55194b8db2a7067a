"""Ripple measured over its public surface only: `ripple up` as a user runs it, and the HTTP routes.

Nothing here imports the orchestrator package, so the same code measures any build of Ripple (or an
instance already running elsewhere, through its URL and keys).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    Latency,
    Launched,
    free_port,
    http_client,
    rate_per_s,
    time_calls,
    time_in_turns,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
BODY = {"input": {"x": 1}}


def ripple_command() -> list[str]:
    """The `ripple` script next to this interpreter, else on PATH, else `python -m orchestrator.cli`."""
    beside = Path(sys.executable).parent / "ripple"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("ripple")
    return [found] if found else [sys.executable, "-m", "orchestrator.cli"]


class RippleServer:
    """`ripple up --insecure --data-dir DIR --port PORT` run in the foreground as a subprocess.

    start() may be called again after stop() or kill() on the same data dir, which is how recovery is
    measured. Every process it leaves (Ray head, embedded Redis) is found and ended by kill().
    """

    def __init__(self, data_dir: Path, log_dir: Path, command: Sequence[str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.command = list(command) if command else ripple_command()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.launched: Launched | None = None
        self.starts = 0

    def start(self) -> float:
        """Launch `ripple up`; return the moment (time.perf_counter()) it was launched."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.pop("RAY_ADDRESS", None)
        argv = [*self.command, "up", "--insecure", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        self.starts += 1
        started_s = time.perf_counter()
        self.launched = Launched(
            argv,
            self.log_dir / f"ripple-up-{self.starts}.log",
            env=env,
            cwd=REPO_ROOT,
            owned_dir=self.data_dir,
        )
        return started_s

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Block until GET /health/ready answers 200.

        Raises RuntimeError, with the tail of the log, when `ripple up` exits first or timeout_s passes.
        """
        deadline_s = time.perf_counter() + timeout_s
        while time.perf_counter() < deadline_s:
            if self.launched is None or not self.launched.alive():
                tail = self.launched.log_tail() if self.launched else ""
                raise RuntimeError(f"ripple up exited before it was ready. Log tail:\n{tail}")
            self.launched.remember_descendants()
            try:
                if httpx.get(f"{self.base_url}/health/ready", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        tail = self.launched.log_tail() if self.launched else ""
        raise RuntimeError(f"Ripple was not ready within {timeout_s:.0f} s. Log tail:\n{tail}")

    def stop(self, grace_s: float = 60.0) -> float:
        """Graceful stop (SIGINT to `ripple up`, as Ctrl-C), then kill what is left; return seconds taken."""
        start_s = time.perf_counter()
        if self.launched is not None:
            self.launched.stop(grace_s=grace_s, first_signal=signal.SIGINT, group=False)
            self.launched = None
        return time.perf_counter() - start_s

    def kill(self) -> None:
        """kill -9 of `ripple up` and everything it started (Ray head, embedded Redis)."""
        if self.launched is not None:
            self.launched.kill()
            self.launched = None


# ---------------------------------------------------------------------------------------------------------
# Measurements over HTTP


@dataclass(frozen=True)
class EndToEnd:
    """n jobs through the worker protocol: from the first submit to the last COMPLETED."""

    n: int
    submit_s: float
    elapsed_s: float
    completed: int

    @property
    def jobs_per_s(self) -> float:
        return rate_per_s(self.completed, self.elapsed_s)


def client_for(base_url: str, api_key: str | None) -> httpx.Client:
    """An HTTP client for Ripple's client and management APIs."""
    return http_client(base_url, {"Authorization": f"Bearer {api_key}"} if api_key else None)


def create_endpoint(client: httpx.Client, name: str, concurrency: int) -> None:
    """Create an endpoint for outside workers only (handler null); an existing one is fine."""
    reply = client.post("/api/v1/endpoints", json={"name": name, "handler": None, "concurrency": concurrency})
    if reply.status_code not in (200, 201, 409):
        raise RuntimeError(f"POST /api/v1/endpoints answered {reply.status_code}: {reply.text[:500]}")


def health(client: httpx.Client, endpoint: str) -> dict[str, Any]:
    """GET /v2/{endpoint}/health as a dict."""
    reply = client.get(f"/v2/{endpoint}/health")
    reply.raise_for_status()
    body: dict[str, Any] = reply.json()
    return body


def purge(client: httpx.Client, endpoint: str) -> int:
    """Drop the endpoint's queued jobs; return how many were removed."""
    reply = client.post(f"/v2/{endpoint}/purge-queue")
    reply.raise_for_status()
    return int(reply.json().get("removed", 0))


def bench_run_latency(client: httpx.Client, endpoint: str, n: int) -> Latency:
    """Sequential POST /v2/{endpoint}/run with a small body; every reply must carry an id."""

    def call() -> None:
        reply = client.post(f"/v2/{endpoint}/run", json=BODY)
        if reply.status_code != 200 or "id" not in reply.json():
            raise RuntimeError(f"POST /v2/{endpoint}/run answered {reply.status_code}: {reply.text[:300]}")

    return time_calls(call, n, warmup=20)


def submit_batches(client: httpx.Client, endpoint: str, n: int, batch_size: int) -> float:
    """Submit n jobs with POST /v2/{endpoint}/run-batch, batch_size at a time; return seconds taken."""
    start_s = time.perf_counter()
    left = n
    while left > 0:
        size = min(batch_size, left)
        jobs = [{"input": {"i": i}} for i in range(size)]
        reply = client.post(f"/v2/{endpoint}/run-batch", json={"jobs": jobs})
        if reply.status_code != 200 or len(reply.json().get("ids", [])) != size:
            raise RuntimeError(
                f"POST /v2/{endpoint}/run-batch answered {reply.status_code}: {reply.text[:300]}"
            )
        left -= size
    return time.perf_counter() - start_s


def wait_for_count(
    client: httpx.Client,
    endpoint: str,
    section: str,
    key: str,
    at_least: int,
    timeout_s: float,
    interval_s: float = 0.05,
) -> tuple[float, int]:
    """Poll the endpoint's health until health[section][key] >= at_least; return (moment, last value seen).

    The moment is time.perf_counter() when the count was first seen; on timeout, the time of giving up.
    """
    deadline_s = time.perf_counter() + timeout_s
    value = -1
    while time.perf_counter() < deadline_s:
        try:
            value = int(health(client, endpoint)[section][key])
        except (httpx.HTTPError, KeyError, ValueError):
            value = -1
        if value >= at_least:
            break
        time.sleep(interval_s)
    return time.perf_counter(), value


class ProtocolWorkers:
    """bench/protocol_worker.py run as a separate process with `workers` asyncio workers."""

    def __init__(
        self,
        base_url: str,
        endpoint: str,
        workers: int,
        batch_size: int,
        log_dir: Path,
        worker_key: str | None,
    ) -> None:
        argv = [
            sys.executable, str(REPO_ROOT / "bench" / "protocol_worker.py"),
            "--base-url", f"{base_url}/v2", "--endpoint", endpoint,
            "--workers", str(workers), "--batch-size", str(batch_size),
        ]  # fmt: skip
        if worker_key:
            argv += ["--worker-key", worker_key]
        self.launched = Launched(argv, log_dir / "protocol-worker.log", cwd=REPO_ROOT)

    def stop(self) -> dict[str, Any]:
        """Stop the workers (SIGTERM) and return their counters (empty when they printed none)."""
        self.launched.stop(grace_s=10, first_signal=signal.SIGTERM)
        for line in reversed(self.launched.log_tail(4000).splitlines()):
            if line.startswith("{"):
                counters: dict[str, Any] = json.loads(line)
                return counters
        return {}


def bench_end_to_end(
    client: httpx.Client, endpoint: str, n: int, batch_size: int, timeout_s: float
) -> EndToEnd:
    """Submit n jobs with run-batch while workers run; time until health counts n more jobs completed."""
    baseline = int(health(client, endpoint)["jobs"]["completed"])
    start_s = time.perf_counter()
    submit_s = submit_batches(client, endpoint, n, batch_size)
    # Polled every 0.1 s: often enough for a run of many seconds, rarely enough not to load the server.
    done_at_s, completed = wait_for_count(client, endpoint, "jobs", "completed", baseline + n, timeout_s, 0.1)
    return EndToEnd(
        n=n, submit_s=submit_s, elapsed_s=done_at_s - start_s, completed=max(0, completed - baseline)
    )


def runsync_call(client: httpx.Client, endpoint: str) -> Callable[[], None]:
    """One POST /v2/{endpoint}/runsync?wait=10000 of BODY; raises RuntimeError unless answered COMPLETED."""

    def call() -> None:
        reply = client.post(f"/v2/{endpoint}/runsync", params={"wait": 10000}, json=BODY)
        body = reply.json() if reply.status_code == 200 else {}
        if body.get("status") != "COMPLETED":
            raise RuntimeError(
                f"POST /v2/{endpoint}/runsync answered {reply.status_code}: {reply.text[:300]}"
            )

    return call


def bench_round_trip(client: httpx.Client, endpoint: str, n: int) -> Latency:
    """Sequential POST /v2/{endpoint}/runsync?wait=10000, each answered COMPLETED by a worker."""
    return time_calls(runsync_call(client, endpoint), n, warmup=10)


def bench_round_trip_beside(
    client: httpx.Client, endpoint: str, echo_path: str, n: int
) -> tuple[Latency, Latency]:
    """Runsync and a plain Serve echo route on the same instance (``echo_path``, as
    ``bench.peers.echo_beside`` deploys it), in blocks taken in turn (:func:`time_in_turns`); (runsync,
    echo)."""

    def echo() -> None:
        client.post(echo_path, json=BODY).raise_for_status()

    runsync, plain = time_in_turns([runsync_call(client, endpoint), echo], n)
    return runsync, plain


@dataclass(frozen=True)
class Recovery:
    """One restart of Ripple with jobs queued: seconds from launching `ripple up` to each milestone."""

    how: str
    jobs: int
    to_ready_s: float
    to_all_queued_s: float | None
    queued_seen: int
    app_reported_s: float | None
    app_reported_queued: int | None


_RECOVERY_METRIC = re.compile(r"^(\S*recover\S*?)(\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


def app_reported_recovery(client: httpx.Client) -> tuple[float | None, int | None]:
    """The queue's own recovery (seconds, jobs found), if the app reports it; else (None, None).

    Looked for in GET /health/ready (a `recovery` object with `seconds` and `queued`), then on /metrics
    (the largest `*recover*seconds*` sample).
    """
    try:
        body = client.get("/health/ready").json()
        recovery = body.get("recovery") if isinstance(body, dict) else None
        if isinstance(recovery, dict) and "seconds" in recovery:
            queued = recovery.get("queued")
            return float(recovery["seconds"]), int(queued) if queued is not None else None
        text = client.get("/metrics").text
    except (httpx.HTTPError, ValueError):
        return None, None
    values = [
        float(match.group(3))
        for match in _RECOVERY_METRIC.finditer(text)
        if "second" in match.group(1) and not match.group(1).endswith(("_count", "_created", "_bucket"))
    ]
    return (max(values) if values else None), None


def measure_restart(
    server: RippleServer,
    endpoint: str,
    jobs: int,
    how: str,
    timeout_s: float = 180.0,
    queued_timeout_s: float = 60.0,
) -> Recovery:
    """Stop Ripple (how: "graceful" or "kill9"), start it again, time ready and all `jobs` seen as queued.

    Waits up to timeout_s for ready, then up to queued_timeout_s for the queue to show every job.
    """
    if how == "graceful":
        server.stop()
    else:
        server.kill()
    started_s = server.start()
    server.wait_ready(timeout_s)
    ready_s = time.perf_counter() - started_s
    with client_for(server.base_url, None) as client:
        queued_at_s, seen = wait_for_count(client, endpoint, "jobs", "inQueue", jobs, queued_timeout_s)
        reported_s, reported_queued = app_reported_recovery(client)
    all_queued_s = queued_at_s - started_s if seen >= jobs else None
    return Recovery(how, jobs, ready_s, all_queued_s, seen, reported_s, reported_queued)
