"""Standby worker processes (see :mod:`orchestrator.core.standby`): the raylet's
``PrestartWorkers`` call, with the calling process's runtime env.

Ray 2.60 has no public API for it; the raylet's gRPC service has (``NodeManagerService.PrestartWorkers``:
language, job id, runtime env, keep-alive, count; the raylet starts at most as many as it has free CPUs).
A process it starts fits any later actor with the same runtime env on that node: Ray hands the
actor's creation task to it instead of starting a new process. Everything here is best effort: a failed
call costs the next actor a process start, never an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import ray

from orchestrator.core.standby import (
    STANDBY_KEEP_ALIVE_S,
    NodeFacts,
    node_by_id,
    node_facts,
)

log = logging.getLogger("ripple.standby")
CALL_TIMEOUT_S = 5.0
_stubs: dict[str, Any] = {}


def nodes() -> list[NodeFacts]:
    """The cluster's nodes (``ray.nodes()``, a GCS read); ``[]`` when it fails."""
    try:
        return node_facts(ray.nodes())
    except Exception:
        log.debug("could not read the nodes", exc_info=True)
        return []


def _stub(node: NodeFacts) -> Any:
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import node_manager_pb2_grpc

    key = f"{node.address}:{node.port}"
    if key not in _stubs:  # one channel per raylet, kept (token auth and TLS as Ray configures them)
        _stubs[key] = node_manager_pb2_grpc.NodeManagerServiceStub(init_grpc_channel(key, asynchronous=True))
    return _stubs[key]


async def prestart(node: NodeFacts, num_workers: int = 1, keep_alive_s: int = STANDBY_KEEP_ALIVE_S) -> bool:
    """Ask ``node``'s raylet for ``num_workers`` standby Python processes with this process's runtime env,
    kept ``keep_alive_s`` while unused. True when the raylet accepted the call."""
    from ray.core.generated import common_pb2, node_manager_pb2, runtime_environment_pb2

    # No job id: a process bound to this job would exit at once when the job's driver is gone (as is
    # ``ripple up --detach``'s, whose detached actors create the pools and replicas); an unbound one fits
    # an actor of any job with the same runtime env.
    request = node_manager_pb2.PrestartWorkersRequest(
        language=common_pb2.PYTHON,
        runtime_env_info=runtime_environment_pb2.RuntimeEnvInfo(
            serialized_runtime_env=ray.get_runtime_context().get_runtime_env_string()
        ),
        keep_alive_duration_secs=keep_alive_s,
        num_workers=num_workers,
    )
    try:
        await _stub(node).PrestartWorkers(request, timeout=CALL_TIMEOUT_S)
    except Exception as exc:
        _stubs.pop(f"{node.address}:{node.port}", None)
        log.info("standby process on node %s not started: %s", node.node_id[:8], exc)
        return False
    return True


async def prestart_on(targets: Iterable[NodeFacts], num_workers: int = 1) -> int:
    """:func:`prestart` on each node at once; how many raylets accepted."""
    done = await asyncio.gather(*(prestart(n, num_workers) for n in targets))
    return sum(done)


async def prestart_here(num_workers: int = 1) -> bool:
    """:func:`prestart` on this process's own node."""
    node_id = ray.get_runtime_context().get_node_id()
    node = node_by_id(await asyncio.to_thread(nodes), node_id)
    return node is not None and await prestart(node, num_workers)


LEAVE_DELAY_S = 0.5
"""How long after its constructor a replica asks for the standby process it leaves behind: not while it
starts serving (a process start is CPU work on the same node), but before a replica idle for a second can
be gone (the request goes with the process)."""


async def _prestart_later(delay_s: float) -> bool:
    await asyncio.sleep(delay_s)
    return await prestart_here()


def leave_standby(delay_s: float = LEAVE_DELAY_S) -> None:
    """From an actor's constructor (on its event loop): in ``delay_s``, start one standby process on this
    node for the next actor with the same runtime env (this one probably took the previous one). Returns
    at once; does nothing outside an event loop."""
    try:
        task = asyncio.get_running_loop().create_task(_prestart_later(delay_s))
    except RuntimeError:
        return
    _pending.add(task)
    task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task[bool]] = set()
