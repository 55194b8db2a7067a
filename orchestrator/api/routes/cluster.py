"""This instance and its Ray cluster under ``/api/v1`` (API key), without an actor call: ``/info``,
``/specs`` (worker resource specs per node) and ``/cluster`` (nodes, draining, pending demand)."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from fastapi import APIRouter, Depends

from orchestrator.api import schemas as s
from orchestrator.api.deps import Boot, State, require_api_key, utf8_body
from orchestrator.core.cluster import shape_specs

router = APIRouter(
    prefix="/api/v1", tags=["management"], dependencies=[Depends(require_api_key), Depends(utf8_body)]
)


def node_specs(nodes: list[dict[str, Any]]) -> list[s.NodeSpec]:
    """Each alive node's GPUs (type and count, every type of a node declaring several), CPUs and memory,
    from ``ray.nodes()`` (shaped by :func:`orchestrator.core.cluster.shape_specs`)."""
    return [s.NodeSpec.model_validate(row) for row in shape_specs(nodes)]


@router.get("/specs", response_model=s.SpecList)
async def specs() -> s.SpecList:
    """Worker resource specs: each alive node's GPUs (type and count), CPUs and memory."""
    nodes = await asyncio.get_running_loop().run_in_executor(None, ray.nodes)
    return s.SpecList(specs=node_specs(nodes))


@router.get("/info", response_model=s.Info)
async def info(boot: Boot) -> s.Info:
    """This instance: version, Ray dashboard URL, store kind, namespace, auth and the timeouts that
    diagnostics compare against. Never a secret."""
    from orchestrator import __version__

    return s.Info(
        version=__version__,
        dashboardUrl=boot.dashboard_url,
        store="embedded" if boot.embedded_store else "external",
        dataDir=boot.data_dir,
        namespace=boot.namespace,
        auth=boot.auth.enabled,
        heartbeatTimeoutS=boot.queue.heartbeat_timeout_s,
        leaseGraceS=boot.queue.lease_grace_s,
        sweepIntervalS=boot.queue.sweep_interval_s,
        autoscalerIntervalS=boot.autoscaler.interval_s,
    )


@router.get("/cluster", response_model=s.ClusterFacts, response_model_exclude_unset=True)
async def cluster(state: State) -> s.ClusterFacts:
    """Ray nodes (GPUs per node and type, alive, draining) and pending resource demand; no actor call."""
    facts = await asyncio.get_running_loop().run_in_executor(None, state.require_cluster_facts())
    return s.ClusterFacts.model_validate(facts)
