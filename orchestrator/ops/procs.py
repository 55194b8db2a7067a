"""Process checks shared by the local launcher, the embedded Redis and the tests' process sweeps."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped by a lax init) is not running.
    Without ``/proc`` to read, a process that accepts signal 0 counts as running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces and parentheses: the state follows its last ")".
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
