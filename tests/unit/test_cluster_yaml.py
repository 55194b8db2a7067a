"""cluster.yaml (Ray cluster launcher, on-prem provider) goes through Ray's own config preparation and
validation, offline: nothing here contacts a host."""

from __future__ import annotations

import copy
import json
import re
import shlex
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.util import prepare_config, validate_config

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
Config = dict[str, Any]


def load() -> Config:
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert isinstance(config, dict)
    return config


def bootstrap(config: Config) -> Config:
    """What `ray up` does before it touches any host: prepare, validate, provider bootstrap."""
    return _bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def ray_start_flags(commands: list[str]) -> dict[str, str]:
    """Flags of the `ray start` command among ``commands``, from the shell words after `ray start`."""
    (command,) = [c for c in commands if "ray start" in c]
    words = shlex.split(command.split("ray start", 1)[1])
    flags = {}
    for word in words:
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            flags[name] = value
    return flags


def test_ray_validates_and_bootstraps_the_config() -> None:
    config = bootstrap(load())
    node_types = config["available_node_types"]
    assert config["provider"]["type"] == "local"
    assert list(node_types) == [config["head_node_type"]]
    # Every listed worker stays in the cluster.
    (node_type,) = node_types.values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(config["provider"]["worker_ips"])


def test_provider_has_only_known_keys() -> None:
    # Ray's schema lets provider sections carry anything; a typo there would be silently ignored.
    assert set(load()["provider"]) <= {"type", "head_ip", "worker_ips", "coordinator_address"}


def test_head_declares_ripple_resources_and_workers_declare_gpus() -> None:
    config = load()
    head = ray_start_flags(config["head_start_ray_commands"])
    assert "head" in head and "block" not in head  # the launcher waits for the command to return
    resources = json.loads(head["resources"])
    assert resources["ripple-control"] >= 1 and resources["ripple-api"] == 1
    assert head["autoscaling-config"] == "~/ray_bootstrap_config.yaml"
    worker = ray_start_flags(config["worker_start_ray_commands"])
    assert "block" not in worker and int(worker["num-gpus"]) >= 1
    assert worker["address"] == "$RAY_HEAD_IP:6379" == f"$RAY_HEAD_IP:{head['port']}"
    assert "ripple-control" not in worker.get("resources", "")


def test_setup_installs_ripple_and_the_pinned_ray() -> None:
    config = load()
    # The dependency string as written in pyproject.toml (tomllib is not in Python 3.10).
    (ray_dep,) = re.findall(r'"(ray\[[^\]]*\]==[^"]+)"', (REPO / "pyproject.toml").read_text())
    assert ray_dep.endswith(f"=={ray.__version__}")
    setup = " ".join(config["setup_commands"])
    assert f'"{ray_dep}"' in setup
    (remote_dir,) = [remote for remote, local in config["file_mounts"].items() if local == "."]
    assert re.search(rf"pip install [^;]*{re.escape(remote_dir)}\b", setup)


@pytest.mark.parametrize(
    "breakage",
    ["unknown top-level key", "wrong type", "head and worker sections (unsupported on-prem)"],
)
def test_broken_configs_are_rejected(breakage: str) -> None:
    config = load()
    if breakage == "unknown top-level key":
        config["setup_command"] = config.pop("setup_commands")
        with pytest.raises(jsonschema.ValidationError):
            bootstrap(config)
    elif breakage == "wrong type":
        config["idle_timeout_minutes"] = "five"
        with pytest.raises(jsonschema.ValidationError):
            validate_config(prepare_config(config))
    else:
        config["available_node_types"] = {"gpu": {"node_config": {}, "resources": {"GPU": 1}}}
        with pytest.raises(click.ClickException, match="not supported for on-premise"):
            bootstrap(config)
