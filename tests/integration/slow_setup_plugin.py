"""A Ray runtime-env plugin for tests: its field makes a node spend that many seconds setting up a
replica's runtime environment before its process starts, as a pip install does, without a network."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray._private.runtime_env.plugin import RuntimeEnvPlugin

FIELD = "ripple_test_slow_setup"
PLUGINS_ENV = '[{"class": "tests.integration.slow_setup_plugin.SlowSetup"}]'
"""The value of ``RAY_RUNTIME_ENV_PLUGINS`` that loads it (set before Ray starts)."""


class SlowSetup(RuntimeEnvPlugin):  # type: ignore[misc]
    name = FIELD

    async def create(self, uri: str | None, runtime_env: Any, context: Any, logger: logging.Logger) -> float:
        seconds = float(runtime_env.get(FIELD) or 0)
        await asyncio.sleep(seconds)
        return 0.0
