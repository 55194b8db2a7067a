"""GPU types at the edges: the endpoint field, the `ripple up --gpus` flag, what nodes offer, which type a
replica asks for, and how /api/v1/specs and the cluster view show typed nodes."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.cli.main import _endpoint_body, _typed_gpus, parser
from orchestrator.core.cluster import shape_nodes, shape_specs, summarize
from orchestrator.core.gpu_types import (
    MAX_GPU_TYPES,
    TypeCapacity,
    head_resources,
    inventory,
    node_gpu_type,
    node_types,
    parse_gpus_flag,
    pick_gpu_type,
    placement_options,
)
from orchestrator.core.models import EndpointPatch, EndpointSpec
from orchestrator.ops.local import head_resources as local_head_resources

pytestmark = pytest.mark.timeout(10)


# ------------------------------------------------------------------------------------- endpoint field


def test_gpu_types_default_null_and_round_trip_in_order() -> None:
    assert EndpointSpec(name="a").gpu_types is None
    spec = EndpointSpec.model_validate({"name": "a", "gpuTypes": ["H100", "A100"]})
    assert spec.gpu_types == ["H100", "A100"]
    assert spec.wire()["gpuTypes"] == ["H100", "A100"]
    assert EndpointSpec.model_validate(spec.wire()) == spec


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([], "at least one"),
        (["H100", "H100"], "listed twice"),
        ([""], "not a GPU type"),
        (["H 100"], "not a GPU type"),
        ([f"T{i}" for i in range(MAX_GPU_TYPES + 1)], f"at most {MAX_GPU_TYPES}"),
        ("H100", "valid list"),
        ([7], "valid string"),
    ],
)
def test_bad_gpu_types_are_refused_naming_the_field(value: Any, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        EndpointSpec.model_validate({"name": "a", "gpuTypes": value})
    err = info.value.errors()[0]
    assert err["loc"][0] == "gpuTypes"
    assert says in str(info.value)


def test_patch_sets_and_clears_gpu_types() -> None:
    spec = EndpointSpec(name="a", gpu_types=["L4"])
    assert EndpointPatch.model_validate({"gpuTypes": ["A100", "L4"]}).apply(spec).gpu_types == ["A100", "L4"]
    assert EndpointPatch.model_validate({"gpuTypes": None}).apply(spec).gpu_types is None
    assert EndpointPatch.model_validate({"priority": 3}).apply(spec).gpu_types == ["L4"]
    with pytest.raises(ValidationError, match="listed twice"):
        EndpointPatch.model_validate({"gpuTypes": ["L4", "L4"]}).apply(spec)


def test_cli_endpoint_flag_and_set() -> None:
    args = parser().parse_args(["endpoint", "create", "a", "--gpu-types", "H100, A100"])
    assert _endpoint_body(args)["gpuTypes"] == ["H100", "A100"]
    args = parser().parse_args(["endpoint", "update", "a", "--set", 'gpuTypes=["L4"]'])
    assert _endpoint_body(args)["gpuTypes"] == ["L4"]


# ----------------------------------------------------------------------------------------- up --gpus


def test_parse_gpus_flag() -> None:
    assert parse_gpus_flag("A100=1,L4=2") == {"A100": 1.0, "L4": 2.0}
    assert parse_gpus_flag(" H100 = 4 ") == {"H100": 4.0}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "TYPE=COUNT"),
        ("A100", "'A100' is not TYPE=COUNT"),
        ("A100=1,", "TYPE=COUNT"),
        ("A100=x", "not a whole number"),
        ("A100=1.5", "not a whole number"),
        ("A100=0", "must be >= 1"),
        ("A100=1,A100=2", "given twice"),
        ("=1", "not TYPE=COUNT"),
    ],
)
def test_bad_gpus_flag_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_gpus_flag(text)
    assert "--gpus" in str(info.value)


def test_up_flag_parsed_and_exclusive_with_num_gpus() -> None:
    args = parser().parse_args(["up", "--gpus", "A100=1,L4=1"])
    assert _typed_gpus(args) == {"A100": 1.0, "L4": 1.0}
    assert _typed_gpus(parser().parse_args(["up", "--num-gpus", "2"])) is None
    with pytest.raises(SystemExit, match=r"--gpus .* and --num-gpus .* cannot be used together"):
        _typed_gpus(parser().parse_args(["up", "--gpus", "A100=1", "--num-gpus", "2"]))
    with pytest.raises(SystemExit, match="ripple up: --gpus 'A100=one'"):
        _typed_gpus(argparse.Namespace(gpus="A100=one", num_gpus=None))


def test_head_declares_the_sum_and_one_resource_per_type() -> None:
    assert head_resources({"A100": 1, "L4": 2}) == (
        3.0,
        {"accelerator_type:A100": 1.0, "accelerator_type:L4": 2.0},
    )
    assert local_head_resources({"A100": 1}) == {"ripple-control": 1000, "accelerator_type:A100": 1.0}
    assert local_head_resources(None) == {"ripple-control": 1000}


# ------------------------------------------------------------------------------------- what nodes offer


def test_node_types_single_several_none() -> None:
    # a real GPU node: Ray marks its type with 1 whatever the GPU count; all its GPUs are of that type
    assert node_types({"GPU": 8, "accelerator_type:H100": 1}) == {"H100": 8.0}
    assert node_types({"GPU": 2, "accelerator_type:A100": 1, "accelerator_type:L4": 1}) == {
        "A100": 1,
        "L4": 1,
    }
    assert node_types({"GPU": 2}) == {}
    assert node_gpu_type({"GPU": 2, "accelerator_type:L4": 1, "accelerator_type:A100": 1}) == "A100"
    assert node_gpu_type({"CPU": 4}) is None


def test_inventory_totals_free_and_largest_free_per_node() -> None:
    nodes = [
        ({"GPU": 4, "accelerator_type:L4": 1}, {"GPU": 1, "accelerator_type:L4": 0.998}),
        ({"GPU": 4, "accelerator_type:L4": 1}, {"GPU": 2, "accelerator_type:L4": 1}),
        # typed logical GPUs on one node: each type's free is its resource's available value
        (
            {"GPU": 3, "accelerator_type:A100": 1, "accelerator_type:T4": 2},
            {"GPU": 2, "accelerator_type:A100": 0, "accelerator_type:T4": 2},
        ),
        ({"GPU": 2}, {"GPU": 2}),
    ]
    inv = inventory(nodes)
    assert inv["L4"] == TypeCapacity(total=8, free=3, largest_free=2, multi_typed=False)
    assert inv["A100"] == TypeCapacity(total=1, free=0, largest_free=0, multi_typed=True)
    assert inv["T4"] == TypeCapacity(total=2, free=2, largest_free=2, multi_typed=True)
    assert set(inv) == {"L4", "A100", "T4"}


def test_pick_first_type_with_a_free_gpu_then_any_offered_then_first() -> None:
    inv = {
        "H100": TypeCapacity(total=2, free=0, largest_free=0),
        "A100": TypeCapacity(total=4, free=1.5, largest_free=1.0),
    }
    assert pick_gpu_type(["H100", "A100"], inv, 1.0) == "A100"
    assert pick_gpu_type(["H100", "A100"], inv, 2.0) == "H100"  # nothing free: wait for the first offered
    assert pick_gpu_type(["B200", "A100"], inv, 2.0) == "A100"
    assert pick_gpu_type(["B200", "X"], inv, 1.0) == "B200"  # nothing offers them: a growing cluster may


def test_placement_options_marker_or_counted_units() -> None:
    single = {"L4": TypeCapacity(total=4, free=4, largest_free=4)}
    multi = {"L4": TypeCapacity(total=1, free=1, largest_free=1, multi_typed=True)}
    assert placement_options("L4", 1.0, single) == {"accelerator_type": "L4"}
    assert placement_options("L4", 0.5, multi) == {"resources": {"accelerator_type:L4": 0.5}}
    assert placement_options("B200", 1.0, {}) == {"accelerator_type": "B200"}


# ------------------------------------------------------------------------------------ specs and cluster


def _node(node_id: str, res: dict[str, float], alive: bool = True) -> dict[str, Any]:
    return {"NodeID": node_id, "Alive": alive, "Resources": res, "NodeManagerAddress": "10.0.0.1"}


def test_specs_show_each_nodes_type_and_every_type_of_a_multi_typed_node() -> None:
    nodes = [
        _node(
            "a", {"GPU": 2, "CPU": 8, "memory": 2**31, "accelerator_type:L4": 1, "accelerator_type:A100": 1}
        ),
        _node("b", {"GPU": 1, "CPU": 4, "accelerator_type:H100": 1}),
        _node("c", {"CPU": 4}),
        _node("d", {"GPU": 1, "accelerator_type:T4": 1}, alive=False),
    ]
    rows = shape_specs(nodes)
    assert [r["nodeId"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["gpuType"] == "A100" and rows[0]["gpusByType"] == {"A100": 1, "L4": 1}
    assert rows[0]["memoryMb"] == 2048 and rows[0]["gpus"] == 2
    assert rows[1]["gpuType"] == "H100" and rows[1]["gpusByType"] == {"H100": 1}
    assert rows[2]["gpuType"] is None and rows[2]["gpusByType"] == {}
    view = summarize(shape_nodes(nodes, {}), None)
    assert view["gpuTypes"] == ["A100", "H100", "L4"]


# ---------------------------------------------------------------------- a type no node offers, in doctor


def test_never_offered_type_is_its_own_blocked_cause_and_a_high_doctor_finding() -> None:
    from dataclasses import replace

    from orchestrator.metrics import BLOCKED_REASONS, blocked_reason
    from orchestrator.ops.doctor.diagnose import diagnose
    from tests.unit.test_diagnose import NOW_S, healthy

    reason = (
        "no node offers GPU type H100 or A100 and the cluster cannot grow (no maxGpus above today's GPUs)"
    )
    assert blocked_reason(reason) == "gpu_type" and "gpu_type" in BLOCKED_REASONS
    assert blocked_reason("not enough GPUs (0 GPUs free) (0 free of type H100)") == "gpus"
    f = replace(
        healthy(), autoscaler={"enabled": True, "endpoints": [{"endpoint": "gen", "blocked": reason}]}
    )
    (finding,) = [x for x in diagnose(f, NOW_S) if x.rule == "autoscaler.blocked"]
    assert finding.severity == "HIGH" and "gpuTypes" in finding.action and "H100" in finding.issue
