"""Standby worker processes: which nodes get one (orchestrator.core.standby)."""

from __future__ import annotations

from orchestrator.core.standby import NodeFacts, node_by_id, node_facts, replica_standby_nodes


def _row(node_id: str, *, alive: bool = True, gpus: float = 0.0, port: int = 7000) -> dict[str, object]:
    return {
        "NodeID": node_id,
        "NodeManagerAddress": "10.0.0.1",
        "NodeManagerPort": port,
        "Alive": alive,
        "Resources": {"CPU": 4.0, **({"GPU": gpus} if gpus else {})},
    }


def test_node_facts_reads_ray_nodes_rows_and_skips_those_without_a_raylet() -> None:
    rows = [_row("a", gpus=2), _row("b", alive=False), {"NodeID": "c", "Alive": True}, _row("d", port=0)]
    facts = node_facts(rows)
    assert facts == [
        NodeFacts("a", "10.0.0.1", 7000, True, 2.0),
        NodeFacts("b", "10.0.0.1", 7000, False, 0.0),
    ]


def test_replica_standby_goes_to_alive_gpu_nodes_when_replicas_need_gpus() -> None:
    nodes = node_facts([_row("cpu"), _row("gpu", gpus=1), _row("dead-gpu", alive=False, gpus=8)])
    assert [n.node_id for n in replica_standby_nodes(nodes, 1.0, False)] == ["gpu"]
    assert [n.node_id for n in replica_standby_nodes(nodes, 0.5, False)] == ["gpu"]


def test_replica_standby_goes_to_every_alive_node_when_replicas_need_no_gpu() -> None:
    nodes = node_facts([_row("cpu"), _row("gpu", gpus=1), _row("dead", alive=False)])
    assert [n.node_id for n in replica_standby_nodes(nodes, 0.0, False)] == ["cpu", "gpu"]


def test_no_replica_standby_for_an_endpoint_with_its_own_runtime_env() -> None:
    nodes = node_facts([_row("gpu", gpus=1)])
    assert replica_standby_nodes(nodes, 1.0, True) == []


def test_node_by_id_finds_only_alive_nodes() -> None:
    nodes = node_facts([_row("a"), _row("b", alive=False)])
    found = node_by_id(nodes, "a")
    assert found is not None and found.node_id == "a"
    assert node_by_id(nodes, "b") is None
    assert node_by_id(nodes, "zzz") is None
