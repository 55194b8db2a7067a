"""A handler whose import takes a known time, as a model load does: ``"bench.slow_init_handler:handle"``.

The import sleeps ``RIPPLE_BENCH_INIT_S`` seconds (default 0.5), which the replica reports as its cold start
(``coldStartS``); the handler itself returns its input at once.
"""

from __future__ import annotations

import os
import time
from typing import Any

INIT_S = float(os.environ.get("RIPPLE_BENCH_INIT_S", "0.5"))
time.sleep(INIT_S)


async def handle(job: dict[str, Any]) -> Any:
    """Return the job's input unchanged."""
    return job.get("input")
