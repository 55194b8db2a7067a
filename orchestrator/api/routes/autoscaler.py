"""The autoscaler under ``/api/v1/autoscaler`` (API key): status, the switch, decision history and
per-endpoint overrides."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from orchestrator.api import schemas as s
from orchestrator.api.deps import Autoscaler, EndpointName, require_api_key, utf8_body

router = APIRouter(
    prefix="/api/v1/autoscaler",
    tags=["management"],
    dependencies=[Depends(require_api_key), Depends(utf8_body)],
)

STATUS_TIMEOUT_S = 30.0


@router.get("/status", response_model=s.AutoscalerStatus, response_model_exclude_unset=True)
async def autoscaler_status(autoscaler: Autoscaler) -> s.AutoscalerStatus:
    """Cluster GPUs total/used/free and, per endpoint, current/desired replicas, queue, priority, effective
    priority, idle and waiting times."""
    return await asyncio.wait_for(autoscaler.status(), STATUS_TIMEOUT_S)


@router.post("/enable", response_model=s.AutoscalerSwitch)
async def autoscaler_enable(autoscaler: Autoscaler) -> s.AutoscalerSwitch:
    return await autoscaler.set_enabled(True)


@router.post("/disable", response_model=s.AutoscalerSwitch)
async def autoscaler_disable(autoscaler: Autoscaler) -> s.AutoscalerSwitch:
    return await autoscaler.set_enabled(False)


@router.get("/history/{endpoint}", response_model=s.AutoscalerHistory)
async def autoscaler_history(
    endpoint: EndpointName, autoscaler: Autoscaler, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> s.AutoscalerHistory:
    """Decisions for the endpoint, newest first, each with its reason."""
    return s.AutoscalerHistory(endpoint=endpoint, history=await autoscaler.history(endpoint, limit))


@router.put("/overrides/{endpoint}", response_model=s.OverrideReply)
async def autoscaler_override(
    endpoint: EndpointName, body: s.OverrideBody, autoscaler: Autoscaler
) -> s.OverrideReply:
    """Pin the endpoint's replica count (``desiredReplicas``) or leave it alone (``disabled``)."""
    return await autoscaler.set_override(endpoint, body)


@router.delete("/overrides/{endpoint}", response_model=s.OverrideReply)
async def autoscaler_override_clear(endpoint: EndpointName, autoscaler: Autoscaler) -> s.OverrideReply:
    """Clear the endpoint's override."""
    return await autoscaler.set_override(endpoint, None)
