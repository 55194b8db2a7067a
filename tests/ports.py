"""Free TCP ports for the servers the tests start, chosen below the kernel's ephemeral range.

A port that ``bind(("127.0.0.1", 0))`` hands out comes from the ephemeral range, the same range outgoing
connections draw from: between the test picking it and the server binding it, a client socket (Ray opens
many) may take it, and the server fails to start (seen in CI: Serve's proxy "Failed to bind to address
'0.0.0.0:35289'"). Ports below that range, and above Ray's worker ports (10002-19999), are never given to
an outgoing connection.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

RAY_WORKER_PORTS_MAX = 19_999
"""Ray's default ``--max-worker-port``: the ports below are its workers'."""


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


_HANDED_OUT: set[int] = set()
"""Every port :func:`free_port` returned in this process."""


def free_port() -> int:
    """A TCP port free on every address right now, above Ray's worker ports and below the ephemeral range
    (random, so that tests started at the same moment do not pick the same one), and never one it returned
    before in this process: the ports picked for one Ray node's components are all free until the node starts,
    and two of them once came out the same (a run of .ci/run, 2026-12-08: Ray refused the node)."""
    low, high = RAY_WORKER_PORTS_MAX + 1, _ephemeral_low() - 1
    for _ in range(500):
        port = random.randint(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free TCP port between {low} and {high}")
