"""Offline checks of Ray's doors in kuberay/: token authentication on every Ray container, the NetworkPolicies
(evaluated against the pods the manifests create, by a small model of Kubernetes' NetworkPolicy semantics),
and the read-only RBAC that ``ripple doctor`` uses.

Rendering and schema helpers come from test_kuberay_manifests; every object is also validated with
``kubernetes_validate`` (strict) as the other core objects are.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from test_kuberay_manifests import (
    KUBERAY,
    Obj,
    cluster_spec,
    core_error,
    env_of,
    extra_docs,
    groups,
    local_port_range,
    of_kind,
    render,
    rendered,
    the,
)

pytestmark = pytest.mark.timeout(120)
__all__ = ["rendered"]  # the parametrized fixture (base, dev, prod), re-exported for pytest

AUTH_SECRET = "ripple-ray-auth"
AUTH_KEY = "auth_token"  # KubeRay's key name for authOptions.secretName
NAMESPACE = "ripple"
READ_VERBS = {"get", "list", "watch"}


# ---------------------------------------------------------------- token authentication
def ray_pods(rendered: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(where, pod spec) of each pod that runs Ray: the RayService's head and groups, the RayJob submitter."""
    spec = cluster_spec(the(rendered, "RayService"))
    yield "head", spec["headGroupSpec"]["template"]["spec"]
    for name, group in groups(spec).items():
        yield name, group["template"]["spec"]
    for job in of_kind(extra_docs(), "RayJob"):
        yield f"{job['metadata']['name']}/submitter", job["spec"]["submitterPodTemplate"]["spec"]


def auth_problems(env: dict[str, Obj], where: str) -> list[str]:
    """What is wrong with one container's Ray auth settings (empty when token auth is on, from the Secret)."""
    problems = []
    if env.get("RAY_AUTH_MODE", {}).get("value") != "token":
        problems.append(f"{where}: RAY_AUTH_MODE is not 'token'")
    token = env.get("RAY_AUTH_TOKEN", {})
    if "value" in token or token.get("valueFrom", {}).get("secretKeyRef") != {
        "name": AUTH_SECRET,
        "key": AUTH_KEY,
    }:
        problems.append(f"{where}: RAY_AUTH_TOKEN does not come from secret {AUTH_SECRET}/{AUTH_KEY}")
    return problems


def token_auth_problems(rendered: list[Obj]) -> list[str]:
    rayservice = the(rendered, "RayService")
    spec = cluster_spec(rayservice)
    problems = []
    if spec.get("authOptions") != {"mode": "token", "secretName": AUTH_SECRET}:
        problems.append(f"authOptions: {spec.get('authOptions')}")
    for where, pod in ray_pods(rendered):
        for container in pod.get("initContainers", []) + pod["containers"]:
            problems += auth_problems(env_of(container), f"{where}/{container['name']}")
    autoscaler_env = {e["name"]: e for e in spec["autoscalerOptions"].get("env", [])}
    problems += auth_problems(autoscaler_env, "autoscaler sidecar")
    return problems


def test_every_ray_container_uses_token_auth_from_the_secret(rendered: list[Obj]) -> None:
    assert token_auth_problems(rendered) == []


@pytest.mark.parametrize(
    "breakage",
    ["mode disabled", "token as a literal", "other secret", "no authOptions", "autoscaler without token"],
)
def test_token_auth_check_catches_each_gap(breakage: str) -> None:
    objs = copy.deepcopy(render(KUBERAY / "base"))
    spec = cluster_spec(the(objs, "RayService"))
    gpu_env = env_of(spec["workerGroupSpecs"][-1]["template"]["spec"]["containers"][0])
    if breakage == "mode disabled":
        gpu_env["RAY_AUTH_MODE"]["value"] = "disabled"
    elif breakage == "token as a literal":
        gpu_env["RAY_AUTH_TOKEN"].pop("valueFrom")
        gpu_env["RAY_AUTH_TOKEN"]["value"] = "hunter2"
    elif breakage == "other secret":
        gpu_env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] = "ripple-keys"
    elif breakage == "no authOptions":
        del spec["authOptions"]
    else:
        spec["autoscalerOptions"]["env"] = []
    assert token_auth_problems(objs) != []


def test_the_token_secret_is_templated_and_dev_has_a_placeholder() -> None:
    (template,) = [s for s in of_kind(extra_docs(), "Secret") if s["metadata"]["name"] == AUTH_SECRET]
    assert set(template["stringData"]) == {AUTH_KEY}
    dev = render(KUBERAY / "overlays/dev")
    (secret,) = [s for s in of_kind(dev, "Secret") if s["metadata"]["name"] == AUTH_SECRET]
    assert "not-secret" in secret["stringData"][AUTH_KEY]


def test_dashboard_is_reachable_only_with_the_token_and_the_ports_are_fixed(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    params = [spec["headGroupSpec"]["rayStartParams"]] + [g["rayStartParams"] for g in groups(spec).values()]
    pinned = {k: v for k, v in params[0].items() if k.endswith("-port") and k != "metrics-export-port"}
    assert set(pinned) >= {
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-grpc-port",
        "dashboard-agent-listen-port",
        "runtime-env-agent-port",
        "min-worker-port",
        "max-worker-port",
    }
    for group_params in params[1:]:  # the same on every pod: one NetworkPolicy names them all
        assert {k: group_params.get(k) for k in pinned} == pinned


# ---------------------------------------------------------------- a model of NetworkPolicy semantics
@dataclass(frozen=True)
class Pod:
    """A pod as a NetworkPolicy sees it: its labels and its namespace."""

    name: str
    labels: dict[str, str]
    namespace: str = NAMESPACE


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes' LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _peer_matches(peer: Obj, src: Pod) -> bool:
    assert "ipBlock" not in peer, "the model does not evaluate ipBlock peers"
    if "namespaceSelector" in peer:
        ns_ok = _selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": src.namespace})
    else:
        ns_ok = src.namespace == NAMESPACE
    return ns_ok and _selects(peer.get("podSelector", {}), src.labels)


def _port_matches(rule_port: Obj, port: int) -> bool:
    assert rule_port.get("protocol", "TCP") == "TCP"
    first = rule_port["port"]
    assert isinstance(first, int), "the model compares numeric ports"
    return first <= port <= rule_port.get("endPort", first)


def admitted(policies: list[Obj], src: Pod, dst: Pod, port: int) -> bool:
    """Whether ``src`` may open a TCP connection to ``dst``:``port`` (dst lives in NAMESPACE)."""
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], dst.labels)
    ]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            ports = rule.get("ports")
            if (not peers or any(_peer_matches(p, src) for p in peers)) and (
                not ports or any(_port_matches(p, port) for p in ports)
            ):
                return True
    return False


def pods_of(rendered: list[Obj]) -> dict[str, Pod]:
    """The pods the manifests create, with the labels KubeRay adds to Ray pods; plus outside pods."""
    spec = cluster_spec(the(rendered, "RayService"))
    kuberay = {"ray.io/is-ray-node": "yes", "ray.io/cluster": "ripple-raycluster-abcde"}
    out = {
        "head": Pod(
            "head",
            {
                **spec["headGroupSpec"]["template"]["metadata"]["labels"],
                **kuberay,
                "ray.io/node-type": "head",
                "ray.io/group": "headgroup",
            },
        )
    }
    for name, group in groups(spec).items():
        labels = {**group["template"]["metadata"]["labels"], **kuberay, "ray.io/node-type": "worker"}
        out[name] = Pod(name, {**labels, "ray.io/group": name})
    (redis,) = of_kind(rendered, "StatefulSet")
    out["redis"] = Pod("redis", redis["spec"]["template"]["metadata"]["labels"])
    (job,) = of_kind(extra_docs(), "RayJob")
    out["submitter"] = Pod("submitter", job["spec"]["submitterPodTemplate"]["metadata"]["labels"])
    out["stranger"] = Pod("stranger", {"app": "something-else"})
    out["stranger-ripple"] = Pod("stranger-ripple", {"app.kubernetes.io/name": "ripple"})
    out["operator"] = Pod(
        "operator",
        {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/component": "kuberay-operator"},
        namespace="ray-system",
    )
    out["prometheus"] = Pod("prometheus", {"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
    out["ingress"] = Pod("ingress", {"app.kubernetes.io/name": "ingress-nginx"}, namespace="ingress-nginx")
    return out


def ray_ports(rendered: list[Obj]) -> set[int]:
    """Every port a Ray pod listens on for other Ray pods: GCS, dashboard, client, the pinned ones, the
    first, last and a middle worker port, and the first, last and a middle port of the range Serve
    replicas' gRPC servers bind in (the proxy's hop to them)."""
    head = cluster_spec(the(rendered, "RayService"))["headGroupSpec"]
    params = head["rayStartParams"]
    low, high = int(params["min-worker-port"]), int(params["max-worker-port"])
    pinned = {int(v) for k, v in params.items() if k.endswith("-port")}
    grpc_low, grpc_high = local_port_range(head["template"]["spec"])
    return {6379, 8265, 10001, (low + high) // 2, grpc_low, (grpc_low + grpc_high) // 2, grpc_high} | pinned


def test_network_policies_and_rbac_are_valid_kubernetes(rendered: list[Obj]) -> None:
    kinds = ("NetworkPolicy", "Role", "RoleBinding", "ServiceAccount")
    objs = [o for o in rendered if o["kind"] in kinds]
    assert {o["kind"] for o in objs} == set(kinds)
    for obj in objs:
        assert core_error(obj) is None, core_error(obj)
    policy = of_kind(rendered, "NetworkPolicy")[0]
    broken = copy.deepcopy(policy)
    broken["spec"]["policyType"] = broken["spec"].pop("policyTypes")
    assert core_error(broken) is not None


def test_ray_pods_are_closed_by_default(rendered: list[Obj]) -> None:
    policies, pods = of_kind(rendered, "NetworkPolicy"), pods_of(rendered)
    ray = [p for p in pods.values() if p.labels.get("ray.io/is-ray-node") == "yes"]
    assert len(ray) == 1 + len(groups(cluster_spec(the(rendered, "RayService"))))
    for dst in ray:
        for src in ("stranger", "stranger-ripple", "ingress", "redis"):
            for port in ray_ports(rendered) | {8000, 22}:
                expected = port == 8000 and dst.labels["app.kubernetes.io/component"] == "ray-api"
                assert admitted(policies, pods[src], dst, port) is expected, (src, dst.name, port)


def test_default_deny_alone_isolates_every_ray_pod(rendered: list[Obj]) -> None:
    """Without the other policies nothing reaches a Ray pod: a policy removed by mistake closes, not opens."""
    pods = pods_of(rendered)
    (deny,) = [
        p for p in of_kind(rendered, "NetworkPolicy") if p["metadata"]["name"].endswith("default-deny")
    ]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and not deny["spec"].get("ingress")
    for pod in pods.values():
        expected = pod.labels.get("ray.io/is-ray-node") != "yes"
        assert admitted([deny], pods["head"], pod, 8000) is expected, pod.name


def test_ray_pods_reach_each_other_on_rays_ports(rendered: list[Obj]) -> None:
    policies, pods = of_kind(rendered, "NetworkPolicy"), pods_of(rendered)
    ray = [p for p in pods.values() if p.labels.get("ray.io/is-ray-node") == "yes"]
    for src in ray:
        for dst in ray:
            for port in ray_ports(rendered):
                assert admitted(policies, src, dst, port), (src.name, dst.name, port)
            assert not admitted(policies, src, dst, 22), (src.name, dst.name)


def test_serve_port_is_open_only_on_the_api_pods(rendered: list[Obj]) -> None:
    rayservice = the(rendered, "RayService")
    policies, pods = of_kind(rendered, "NetworkPolicy"), pods_of(rendered)
    (port,) = [p["targetPort"] for p in rayservice["spec"]["serveService"]["spec"]["ports"]]
    for src in ("stranger", "ingress", "submitter"):
        assert admitted(policies, pods[src], pods["api"], port), src
        for dst in [n for n, p in pods.items() if p.labels.get("ray.io/is-ray-node") and n != "api"]:
            assert not admitted(policies, pods[src], pods[dst], port), (src, dst)


def test_operator_submitter_and_prometheus_get_only_their_ports(rendered: list[Obj]) -> None:
    policies, pods = of_kind(rendered, "NetworkPolicy"), pods_of(rendered)
    head, operator, submitter, prom = pods["head"], pods["operator"], pods["submitter"], pods["prometheus"]
    assert admitted(policies, operator, head, 8265) and admitted(policies, operator, head, 8000)
    assert not admitted(policies, operator, head, 6379)
    assert admitted(policies, submitter, head, 8265)
    assert not admitted(policies, submitter, head, 6379) and not admitted(policies, submitter, head, 10001)
    ray = [p for p in pods.values() if p.labels.get("ray.io/is-ray-node") == "yes"]
    for dst in ray:
        metrics = {
            p["containerPort"]
            for c in _pod_spec(rendered, dst.name)["containers"]
            for p in c.get("ports", [])
            if p["name"] == "metrics"
        }
        assert metrics == {8080}, dst.name
        assert admitted(policies, prom, dst, 8080), dst.name
        assert not admitted(policies, prom, dst, 6379), dst.name
        if dst.name != "head":
            assert not admitted(policies, operator, dst, 8265), dst.name


def test_redis_admits_only_the_head_and_api_pods(rendered: list[Obj]) -> None:
    policies, pods = of_kind(rendered, "NetworkPolicy"), pods_of(rendered)
    redis = pods["redis"]
    for name, pod in pods.items():
        expected = name in ("head", "api")
        assert admitted(policies, pod, redis, 6379) is expected, name


def _pod_spec(rendered: list[Obj], name: str) -> Obj:
    spec = cluster_spec(the(rendered, "RayService"))
    tmpl = spec["headGroupSpec"] if name == "head" else groups(spec)[name]
    return dict(tmpl["template"]["spec"])


POLICY_BREAKAGES: dict[str, Callable[[list[Obj]], None]] = {
    "serve open on every Ray pod": lambda ps: next(p for p in ps if p["metadata"]["name"] == "ripple-serve")[
        "spec"
    ]["podSelector"]["matchLabels"].pop("app.kubernetes.io/component"),
    "internal rule open to all": lambda ps: next(
        p for p in ps if p["metadata"]["name"] == "ripple-ray-internal"
    )["spec"]["ingress"][0].pop("from"),
    "replica gRPC ports missing": lambda ps: next(
        p for p in ps if p["metadata"]["name"] == "ripple-ray-internal"
    )["spec"]["ingress"][0]["ports"].pop(),
    "worker ports missing": lambda ps: next(p for p in ps if p["metadata"]["name"] == "ripple-ray-internal")[
        "spec"
    ]["ingress"][0]["ports"].pop(-2),
}


@pytest.mark.parametrize("breakage", POLICY_BREAKAGES)
def test_policy_checks_catch_a_broken_policy(breakage: str) -> None:
    objs = copy.deepcopy(render(KUBERAY / "base"))
    policies = of_kind(objs, "NetworkPolicy")
    POLICY_BREAKAGES[breakage](policies)
    objs = [o for o in objs if o["kind"] != "NetworkPolicy"] + policies
    checks = (test_ray_pods_are_closed_by_default, test_ray_pods_reach_each_other_on_rays_ports)
    failures = 0
    for check in checks:
        try:
            check(objs)
        except AssertionError:
            failures += 1
    assert failures >= 1


# ---------------------------------------------------------------- RBAC for ripple doctor
def test_doctor_rbac_is_read_only_and_only_the_head_has_a_token(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    account = the(rendered, "ServiceAccount")["metadata"]["name"]
    role = the(rendered, "Role")
    binding = the(rendered, "RoleBinding")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ_VERBS, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for needed in (("", "pods"), ("", "events"), ("ray.io", "rayclusters")):
        assert {"get", "list"} <= granted.get(needed, set()), needed
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account}]
    head = spec["headGroupSpec"]["template"]["spec"]
    assert head["serviceAccountName"] == account and head.get("automountServiceAccountToken", True)
    for name, group in groups(spec).items():  # user handlers and the API need no Kubernetes token
        pod: Any = group["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        assert "serviceAccountName" not in pod, name
