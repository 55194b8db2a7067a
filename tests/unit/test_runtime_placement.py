"""Where the HTTP ingress replicas go: the API slots or the control node, when the cluster has them."""

from __future__ import annotations

from orchestrator.core.placement import ingress_actor_options


def test_api_slots_win_over_the_control_node() -> None:
    opts = ingress_actor_options({"CPU": 8.0, "ripple-control": 1000.0, "ripple-api": 2.0})
    assert opts == {"num_cpus": 0, "resources": {"ripple-api": 1}}


def test_control_node_hosts_the_ingress_without_api_slots() -> None:
    opts = ingress_actor_options({"CPU": 8.0, "GPU": 2.0, "ripple-control": 1000.0})
    assert opts == {"num_cpus": 0, "resources": {"ripple-control": 1}}


def test_plain_cluster_leaves_placement_to_serve() -> None:
    assert ingress_actor_options({"CPU": 8.0, "GPU": 2.0}) == {"num_cpus": 0}
    assert ingress_actor_options({"CPU": 8.0, "ripple-api": 0.5}) == {"num_cpus": 0}
