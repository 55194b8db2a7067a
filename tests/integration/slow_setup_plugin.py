"""A Ray runtime-env plugin for tests: its field, a file's path, makes a node keep setting up a replica's
runtime environment until that file exists (at most ``MAX_SETUP_S``) before its process starts, as a pip
install does, without a network. The test decides when the set-up ends, whatever the machine's load."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from ray._private.runtime_env.plugin import RuntimeEnvPlugin

FIELD = "ripple_test_slow_setup"
PLUGINS_ENV = '[{"class": "tests.integration.slow_setup_plugin.SlowSetup"}]'
"""The value of ``RAY_RUNTIME_ENV_PLUGINS`` that loads it (set before Ray starts)."""
MAX_SETUP_S = 100.0


class SlowSetup(RuntimeEnvPlugin):  # type: ignore[misc]
    name = FIELD

    async def create(self, uri: str | None, runtime_env: Any, context: Any, logger: logging.Logger) -> float:
        gate = Path(str(runtime_env.get(FIELD)))
        deadline_s = time.monotonic() + MAX_SETUP_S
        while not gate.exists() and time.monotonic() < deadline_s:
            await asyncio.sleep(0.1)
        return 0.0
