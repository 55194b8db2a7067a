"""Handlers of ``bench/rollout.py``: two versions of one endpoint's code. Each sleeps the job's ``sleep_s``
(async: no thread hop) and says which version ran it."""

from __future__ import annotations

import asyncio
from typing import Any


async def v1(job: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(job["input"].get("sleep_s", 0.1)))
    return {"handler": "v1"}


async def v2(job: dict[str, Any]) -> dict[str, Any]:
    await asyncio.sleep(float(job["input"].get("sleep_s", 0.1)))
    return {"handler": "v2"}
