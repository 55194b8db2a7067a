"""A created replica's stage before its process runs: waiting for resources or being set up."""

from __future__ import annotations

from orchestrator.core.replica_start import Start, asked_resources, setup_activity, start_stage

GPU_ONLY = frozenset({"GPU"})


def test_asked_resources_are_the_positive_ray_options() -> None:
    assert asked_resources({"num_gpus": 1, "num_cpus": 0, "name": "x"}) == GPU_ONLY
    assert asked_resources({"num_gpus": 0.5, "num_cpus": 2, "memory": 1024}) == {"GPU", "CPU", "memory"}
    assert asked_resources({"num_gpus": 1, "accelerator_type": "A100"}) == {"GPU", "accelerator_type:A100"}
    assert asked_resources({"num_gpus": 1, "resources": {"gpu-L4": 1.0, "zero": 0}}) == {"GPU", "gpu-L4"}
    assert asked_resources({}) == frozenset()


def test_a_replica_with_a_process_runs() -> None:
    assert start_stage(True, GPU_ONLY, [{"GPU": 1.0}]) is Start.RUNNING
    assert start_stage(True, None, None) is Start.RUNNING


def test_a_pending_request_for_what_it_asks_means_it_may_be_waiting() -> None:
    assert start_stage(False, GPU_ONLY, [{"GPU": 1.0}]) is Start.WAITING
    assert start_stage(False, {"GPU", "CPU"}, [{"CPU": 4.0}]) is Start.WAITING
    typed = frozenset({"GPU", "accelerator_type:A100"})
    assert start_stage(False, typed, [{"accelerator_type:A100": 0.001}]) is Start.WAITING


def test_no_pending_request_for_what_it_asks_means_its_node_sets_it_up() -> None:
    assert start_stage(False, GPU_ONLY, []) is Start.SETTING_UP
    assert start_stage(False, GPU_ONLY, [{"CPU": 1.0}, {"memory": 1e9}]) is Start.SETTING_UP
    assert start_stage(False, GPU_ONLY, [{"GPU": 0.0}]) is Start.SETTING_UP


def test_unknown_demand_or_asks_count_as_waiting() -> None:
    assert start_stage(False, GPU_ONLY, None) is Start.WAITING
    assert start_stage(False, None, []) is Start.WAITING


def test_setup_activity_names_what_the_node_does() -> None:
    assert setup_activity(None) == "starting its worker process"
    assert setup_activity({"env_vars": {"A": "1"}}) == "starting its worker process"
    assert (
        setup_activity({"pip": ["torch==2.5", "diffusers"]})
        == "installing torch==2.5, diffusers (runtimeEnv.pip)"
    )
    many = {"pip": {"packages": ["a", "b", "c", "d", "e"], "pip_check": False}}
    assert setup_activity(many) == "installing a, b, c and 2 more (runtimeEnv.pip)"
    assert setup_activity({"uv": "requirements.txt"}) == "installing its packages (runtimeEnv.uv)"
    assert setup_activity({"conda": {"dependencies": ["numpy"]}}) == (
        "creating its conda environment (runtimeEnv.conda)"
    )
    assert (
        setup_activity({"image_uri": "ghcr.io/x/y:1"}) == "pulling its container image (runtimeEnv.image_uri)"
    )
    assert setup_activity({"working_dir": "gcs://_ray_pkg_x.zip"}) == "fetching its code"
    both = {"working_dir": "gcs://_ray_pkg_x.zip", "pip": ["runpod"]}
    assert setup_activity(both) == "installing runpod (runtimeEnv.pip)"
