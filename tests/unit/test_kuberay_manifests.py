"""Offline checks of the Kubernetes manifests under kuberay/.

Every kustomization is rendered by a small kustomize equivalent (``resources`` and JSON6902 ``patches``
only; any other kustomization field fails), KubeRay objects are validated strictly against KubeRay's CRDs
(unknown fields rejected), core objects with ``kubernetes_validate``, ``serveConfigV2`` with Ray Serve's
own schema plus a key-name check, and Ripple's deployment invariants are asserted on the rendered output.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shlex
import subprocess
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

pytestmark = pytest.mark.timeout(120)

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
KUBERAY = REPO / "kuberay"
K8S_VERSION = "1.30"
KUSTOMIZATIONS = sorted(p.parent for p in KUBERAY.rglob("kustomization.yaml"))
OVERLAYS = [d for d in KUSTOMIZATIONS if d.parent.name == "overlays"]
CRD_FILES = {"RayService": "rayservices", "RayJob": "rayjobs", "RayCluster": "rayclusters"}
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_EXECUTION_TIMEOUT_S = 600  # an endpoint's default executionTimeout, 600000 ms


# ---------------------------------------------------------------- a tiny kustomize
def load_docs(path: Path) -> list[Obj]:
    """All non-empty YAML documents of ``path``."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), f"JSON pointer must start with '/': {path!r}"
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _step(node: Any, key: str) -> Any:
    return node[int(key)] if isinstance(node, list) else node[key]


def apply_json6902(obj: Obj, ops: list[Obj]) -> Obj:
    """Applies RFC 6902 ``add``/``remove``/``replace``/``test`` ops to a copy of ``obj``."""
    out = copy.deepcopy(obj)
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = out
        for key in parents:
            node = _step(node, key)
        kind = op["op"]
        if kind == "test":
            assert _step(node, last) == op["value"], f"JSON6902 test failed at {op['path']}"
        elif kind == "remove":
            del node[int(last) if isinstance(node, list) else last]
        elif kind == "replace":
            _step(node, last)  # must exist
            node[int(last) if isinstance(node, list) else last] = copy.deepcopy(op["value"])
        elif kind == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif kind == "add":
            node[last] = copy.deepcopy(op["value"])
        else:
            raise AssertionError(f"unsupported JSON6902 op {kind!r}")
    return out


def _matches(obj: Obj, target: Obj) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    actual = {"group": group, "version": version, "kind": obj["kind"], "name": obj["metadata"]["name"]}
    return all(actual[k] == v for k, v in target.items())


def render(directory: Path) -> list[Obj]:
    """Renders ``directory``/kustomization.yaml like ``kustomize build`` does for the features used here."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - {"apiVersion", "kind", "resources", "patches"}
    assert not unknown, f"{directory}: kustomization fields the test renderer does not implement: {unknown}"
    objs: list[Obj] = []
    for ref in spec.get("resources", []):
        path = (directory / ref).resolve()
        if path.is_dir():
            objs += render(path)
        else:
            assert path.is_relative_to(directory), f"{ref}: files must be inside the kustomization root"
            objs += load_docs(path)
    for patch in spec.get("patches", []):
        assert set(patch) <= {"path", "patch", "target"}, patch
        ops = yaml.safe_load(patch["patch"] if "patch" in patch else (directory / patch["path"]).read_text())
        assert isinstance(ops, list), f"{patch}: only JSON6902 patches are supported"
        hits = [i for i, o in enumerate(objs) if _matches(o, patch["target"])]
        assert hits, f"patch target matches nothing: {patch['target']}"
        for i in hits:
            objs[i] = apply_json6902(objs[i], ops)
    ids = [(o["apiVersion"].rpartition("/")[0], o["kind"], o["metadata"]["name"]) for o in objs]
    assert len(ids) == len(set(ids)), f"{directory}: duplicate objects {ids}"
    return objs


# ---------------------------------------------------------------- strict CRD validation
def make_strict(schema: Any) -> Any:
    """Sets additionalProperties: false on every object schema with properties and no say of its own."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for value in schema.values():
            make_strict(value)
    elif isinstance(schema, list):
        for value in schema:
            make_strict(value)
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.protocols.Validator]:
    folder = Path(os.environ.get("RIPPLE_KUBERAY_CRDS", REPO.parent / "shared" / "kuberay-crds"))
    if not folder.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {folder} (set RIPPLE_KUBERAY_CRDS to the folder)")
    validators = {}
    for kind, stem in CRD_FILES.items():
        # libyaml when present: these files are megabytes and the pure-Python loader takes seconds.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        crd = yaml.load((folder / f"ray.io_{stem}.yaml").read_text(), Loader=loader)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = make_strict(version["schema"]["openAPIV3Schema"])
        validators[kind] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(validators: dict[str, jsonschema.protocols.Validator], obj: Obj) -> list[str]:
    assert obj["apiVersion"] == "ray.io/v1", obj["apiVersion"]
    errors = validators[obj["kind"]].iter_errors(obj)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def core_error(obj: Obj) -> str | None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- Serve config
def _models_in(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def unknown_serve_keys(data: Any, model: type, where: str = "") -> list[str]:
    """Keys of ``data`` that are not fields of the pydantic ``model`` (recursively)."""
    if isinstance(data, list):
        return [k for i, item in enumerate(data) for k in unknown_serve_keys(item, model, f"{where}[{i}]")]
    if not isinstance(data, dict):
        return []
    fields = model.model_fields  # type: ignore[attr-defined]
    names = {n: f for n, f in fields.items()} | {f.alias: f for f in fields.values() if f.alias}
    bad = [f"{where}.{k}" for k in data if k not in names]
    for key, value in data.items():
        for sub in _models_in(names[key].annotation) if key in names else []:
            bad += unknown_serve_keys(value, sub, f"{where}.{key}")
    return bad


def serve_config(rayservice: Obj) -> Obj:
    config = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    return typing.cast(Obj, config)


# ---------------------------------------------------------------- helpers over rendered objects
def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def the(objs: list[Obj], kind: str) -> Obj:
    (obj,) = of_kind(objs, kind)
    return obj


def cluster_spec(obj: Obj) -> Obj:
    spec = obj["spec"]
    return typing.cast(Obj, spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec)


def groups(spec: Obj) -> dict[str, Obj]:
    return {g["groupName"]: g for g in spec.get("workerGroupSpecs", [])}


def gpu_groups(spec: Obj) -> dict[str, Obj]:
    return {n: g for n, g in groups(spec).items() if "num-gpus" in g.get("rayStartParams", {})}


def ray_start_resources(params: dict[str, str]) -> dict[str, float]:
    """Parses rayStartParams ``resources`` written as '"{\\"name\\": 1}"'."""
    raw = params.get("resources")
    if raw is None:
        return {}
    (inner,) = shlex.split(raw)
    return typing.cast(dict[str, float], json.loads(inner))


def env_of(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    """Every pod spec inside ``obj``, with a label saying where it is."""
    if obj["kind"] in ("StatefulSet", "Deployment", "Job"):
        yield obj["metadata"]["name"], obj["spec"]["template"]["spec"]
    if obj["kind"] in CRD_FILES:
        spec = cluster_spec(obj)
        if "headGroupSpec" in spec:
            yield "head", spec["headGroupSpec"]["template"]["spec"]
            for name, group in groups(spec).items():
                yield name, group["template"]["spec"]
        if "submitterPodTemplate" in obj["spec"]:
            yield "submitter", obj["spec"]["submitterPodTemplate"]["spec"]


def walk(node: Any) -> Iterator[Obj]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


EXTRA_FILES = [
    KUBERAY / "base/secrets.template.yaml",
    KUBERAY / "overlays/prod/servicemonitor.yaml",
    *sorted((KUBERAY / "examples").glob("*.yaml")),
]


def extra_docs() -> list[Obj]:
    """Documents of the YAML files no kustomization lists: templates, examples, optional extras."""
    return [d for p in EXTRA_FILES for d in load_docs(p)]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(KUBERAY)))
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(request.param)


# ================================================================ the renderer itself
def test_every_yaml_file_is_rendered_or_checked_separately() -> None:
    used = set(EXTRA_FILES)
    for directory in KUSTOMIZATIONS:
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used |= {directory / "kustomization.yaml"}
        used |= {directory / r for r in spec.get("resources", []) if (directory / r).is_file()}
        used |= {directory / p["path"] for p in spec.get("patches", []) if "path" in p}
    stray = {p for p in KUBERAY.rglob("*.yaml")} - {p.resolve() for p in used}
    assert not stray, f"YAML files no test looks at: {sorted(map(str, stray))}"


def test_renderer_rejects_unknown_kustomization_fields(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(AssertionError, match="namePrefix"):
        render(tmp_path)


def test_json6902_test_op_guards_indexes() -> None:
    obj = {"a": [{"n": "x"}, {"n": "y"}]}
    assert apply_json6902(obj, [{"op": "remove", "path": "/a/0"}]) == {"a": [{"n": "y"}]}
    with pytest.raises(AssertionError, match="test failed"):
        apply_json6902(obj, [{"op": "test", "path": "/a/0/n", "value": "y"}])


# ================================================================ schema validation
def test_kuberay_objects_match_the_crds_strictly(
    rendered: list[Obj], crd_validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    objs = [o for o in rendered + extra_docs() if o["apiVersion"] == "ray.io/v1"]
    assert of_kind(objs, "RayService") and of_kind(objs, "RayJob")
    for obj in objs:
        assert crd_errors(crd_validators, obj) == [], obj["metadata"]["name"]


def test_core_objects_are_valid_kubernetes(rendered: list[Obj]) -> None:
    core = [o for o in rendered + extra_docs() if o["apiVersion"].split("/")[0] in ("v1", "apps", "policy")]
    core += [o for o in rendered if o["kind"] == "Ingress"]
    for rayservice in of_kind(rendered, "RayService"):  # the Service KubeRay creates from serveService
        core.append({"apiVersion": "v1", "kind": "Service", **rayservice["spec"]["serveService"]})
    assert {o["kind"] for o in core} >= {"Service", "StatefulSet", "Secret", "Ingress"}
    for obj in core:
        assert core_error(obj) is None, core_error(obj)


def _break(obj: Obj, mutate: typing.Callable[[Obj], None]) -> Obj:
    broken = copy.deepcopy(obj)
    mutate(broken)
    return broken


CRD_BREAKAGES: dict[str, typing.Callable[[Obj], None]] = {
    "typo in a field name": lambda o: cluster_spec(o)["headGroupSpec"].update(
        rayStartParam=cluster_spec(o)["headGroupSpec"].pop("rayStartParams")
    ),
    "typo deep in a pod template": lambda o: cluster_spec(o)["workerGroupSpecs"][1]["template"]["spec"][
        "containers"
    ][0].update(resource={}),
    "wrong enum value": lambda o: cluster_spec(o)["autoscalerOptions"].update(version="v3"),
    "string where an integer belongs": lambda o: cluster_spec(o)["workerGroupSpecs"][1].update(
        maxReplicas="4"
    ),
}


@pytest.mark.parametrize("breakage", CRD_BREAKAGES)
def test_broken_rayservice_fails_crd_validation(
    breakage: str, crd_validators: dict[str, jsonschema.protocols.Validator]
) -> None:
    rayservice = the(render(KUBERAY / "base"), "RayService")
    assert crd_errors(crd_validators, rayservice) == []
    assert crd_errors(crd_validators, _break(rayservice, CRD_BREAKAGES[breakage])) != []


def test_broken_core_objects_fail_validation() -> None:
    base = render(KUBERAY / "base")
    redis = next(o for o in base if o["kind"] == "StatefulSet")
    assert core_error(_break(redis, lambda o: o["spec"].update(replica=1))) is not None
    service = next(o for o in base if o["kind"] == "Service")
    assert core_error(_break(service, lambda o: o["spec"]["ports"][0].update(port="x"))) is not None


def test_serve_config_matches_serves_schema(rendered: list[Obj]) -> None:
    for rayservice in of_kind(rendered, "RayService"):
        config = serve_config(rayservice)
        assert unknown_serve_keys(config, ServeDeploySchema) == []
        (app,) = config["applications"]
        module, _, attribute = app["import_path"].partition(":")
        assert (module, attribute) == ("serve_app", "app")
        assert app["route_prefix"] == "/"
        assert config["http_options"]["port"] == 8000


def test_serve_key_check_catches_a_typo() -> None:
    config = serve_config(the(render(KUBERAY / "base"), "RayService"))
    config["applications"][0]["deployments"][0]["num_replica"] = 2
    config["applications"][0]["deployments"][0]["ray_actor_options"]["num_cpu"] = 1
    ServeDeploySchema.model_validate(config)  # Serve itself ignores both typos...
    assert len(unknown_serve_keys(config, ServeDeploySchema)) == 2  # ...the key check does not.


# ================================================================ Ripple's invariants
def test_ray_version_is_pinned_consistently(rendered: list[Obj]) -> None:
    # The pin as written in pyproject.toml (tomllib is not in Python 3.10).
    (pin,) = re.findall(r'"ray\[[^\]]*\]==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pin == ray.__version__
    dockerfile = (KUBERAY / "image/Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=rayproject/ray:{pin}-py311\n" in dockerfile
    for obj in [o for o in rendered + extra_docs() if o["kind"] in ("RayService", "RayCluster")]:
        assert cluster_spec(obj)["rayVersion"] == pin


def test_no_deprecated_rayservice_fields(rendered: list[Obj]) -> None:
    # Still in the 1.7 CRD but ignored by the operator: setting them would only mislead.
    deprecated = {"serviceUnhealthySecondThreshold", "deploymentUnhealthySecondThreshold"}
    for rayservice in of_kind(rendered, "RayService"):
        assert not deprecated & set(rayservice["spec"])
        assert rayservice["spec"]["upgradeStrategy"]["type"] in (
            "NewCluster",
            "NewClusterWithIncrementalUpgrade",
        )


def test_head_hosts_only_the_control_actors(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    params = spec["headGroupSpec"]["rayStartParams"]
    assert params["num-cpus"] == "0"
    assert ray_start_resources(params)["ripple-control"] >= 1
    assert "resources" not in spec["headGroupSpec"]  # KubeRay refuses both forms at once
    for group in groups(spec).values():
        assert "ripple-control" not in ray_start_resources(group["rayStartParams"])
        assert not (group.get("resources") and group["rayStartParams"].keys() & {"num-cpus", "resources"})


def test_autoscaler_v2_and_scale_to_zero_gpu_groups(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["version"] == "v2"
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    assert gpu_groups(spec), "at least one GPU worker group"
    for name, group in gpu_groups(spec).items():
        assert group["minReplicas"] == group.get("replicas", 0) == 0, name
        assert group["maxReplicas"] >= 1, name
    for _, pod in pod_specs(the(rendered, "RayService")):  # autoscaler v2 needs Never or unset
        assert pod.get("restartPolicy", "Never") == "Never"


def test_gpu_limits_match_num_gpus(rendered: list[Obj]) -> None:
    for name, group in gpu_groups(cluster_spec(the(rendered, "RayService"))).items():
        pod = group["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        num_gpus = int(group["rayStartParams"]["num-gpus"])
        assert int(resources["limits"][GPU_RESOURCE]) == num_gpus >= 1, name
        assert int(resources["requests"].get(GPU_RESOURCE, num_gpus)) == num_gpus, name
        assert any(t["key"] == GPU_RESOURCE for t in pod["tolerations"]), name
        assert pod["nodeSelector"], name
        accelerator = [
            r for r in ray_start_resources(group["rayStartParams"]) if r.startswith("accelerator_type:")
        ]
        assert len(accelerator) == 1, name


def test_gpu_groups_advertise_their_type(rendered: list[Obj]) -> None:
    """Each GPU group declares Ray's ``accelerator_type:<T>`` marker (value 1, as Ray's own detection sets
    it) for the GPU its pods select, so an endpoint's ``gpuTypes: [T]`` (Ripple asks
    ``accelerator_type=T``) scales exactly that group up."""
    from orchestrator.core.gpu_types import validate_gpu_types

    advertised: dict[str, str] = {}
    for name, group in gpu_groups(cluster_spec(the(rendered, "RayService"))).items():
        res = ray_start_resources(group["rayStartParams"])
        (marker,) = [r for r in res if r.startswith("accelerator_type:")]
        gpu_type = marker.split(":", 1)[1]
        assert res[marker] == 1, name
        assert validate_gpu_types([gpu_type]) == [gpu_type], name
        assert name == f"gpu-{gpu_type.lower()}", (name, gpu_type)
        product = group["template"]["spec"]["nodeSelector"]["nvidia.com/gpu.product"]
        assert gpu_type in product, (name, product)
        assert gpu_type not in advertised.values(), f"{gpu_type} advertised by two groups"
        advertised[name] = gpu_type
    assert advertised, "at least one GPU group advertises its type"


def test_base_ships_l4_a100_and_h100_groups() -> None:
    groups_ = gpu_groups(cluster_spec(the(render(KUBERAY / "base"), "RayService")))
    types = {
        r.split(":", 1)[1]
        for g in groups_.values()
        for r in ray_start_resources(g["rayStartParams"])
        if r.startswith("accelerator_type:")
    }
    assert types == {"A100", "H100", "L4"}


def test_grace_period_outlasts_the_drain(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    drains = {}
    for where, pod in pod_specs(the(rendered, "RayService")):
        drain_s = float(env_of(pod["containers"][0])["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]["value"])
        assert pod["terminationGracePeriodSeconds"] >= drain_s + 20, where
        drains[where] = drain_s
    for name in gpu_groups(spec):
        assert drains[name] >= DEFAULT_EXECUTION_TIMEOUT_S, name
    assert drains["head"] > max(drains[name] for name in gpu_groups(spec))


def test_no_prestop_ray_stop_anywhere(rendered: list[Obj]) -> None:
    for node in walk(rendered + extra_docs()):
        pre_stop = (
            node.get("lifecycle", {}).get("preStop", {}) if isinstance(node.get("lifecycle"), dict) else {}
        )
        assert "ray stop" not in " ".join(pre_stop.get("exec", {}).get("command", []))


def test_every_ray_node_preloads_ripples_actor_modules(rendered: list[Obj]) -> None:
    """As ``ripple up``'s head does (orchestrator.ops.local.preload_env): a replica created in a standby
    process serves without importing its actor class and the queue's."""
    standby = _import_or_skip("orchestrator.core.standby")
    expected = ",".join(standby.PRELOADED_MODULES)
    for obj in of_kind(rendered, "RayService"):
        for where, pod in pod_specs(obj):
            env = env_of(pod["containers"][0])
            assert env.get("RAY_preload_python_modules", {}).get("value") == expected, where


def test_every_ray_node_runs_serves_proxy_over_grpc_as_ripple_up_does(rendered: list[Obj]) -> None:
    """The same transport as ``ripple up``'s head (orchestrator.ops.local.serve_transport_env), message limit
    included, on every Ray container: a proxy reaches API replicas on any node."""
    local = _import_or_skip("orchestrator.ops.local")
    expected = local.serve_transport_env({})
    for obj in of_kind(rendered, "RayService"):
        for where, pod in pod_specs(obj):
            env = env_of(pod["containers"][0])
            assert {k: env.get(k, {}).get("value") for k in expected} == expected, where


def local_port_range(pod: Obj) -> tuple[int, int]:
    """The pod's ``net.ipv4.ip_local_port_range`` sysctl (the ports a server binding port 0 gets)."""
    sysctls = {s["name"]: s["value"] for s in pod.get("securityContext", {}).get("sysctls", [])}
    low, high = sysctls["net.ipv4.ip_local_port_range"].split()
    return int(low), int(high)


def test_every_ray_pod_fixes_its_local_port_range_apart_from_rays_worker_ports(rendered: list[Obj]) -> None:
    """Serve replicas' gRPC servers bind port 0: one range on every pod lets the NetworkPolicy name it, and it
    must not meet the worker ports Ray binds itself."""
    for obj in of_kind(rendered, "RayService"):
        spec = cluster_spec(obj)
        params = spec["headGroupSpec"]["rayStartParams"]
        ranges = {where: local_port_range(pod) for where, pod in pod_specs(obj)}
        assert len(set(ranges.values())) == 1, ranges
        ((low, high),) = set(ranges.values())
        assert low < high and (high < int(params["min-worker-port"]) or low > int(params["max-worker-port"]))


def test_every_container_has_cpu_and_memory(rendered: list[Obj]) -> None:
    for obj in rendered + extra_docs():
        for where, pod in pod_specs(obj):
            for container in pod.get("initContainers", []) + pod["containers"]:
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][kind]), (where, container["name"])
        if obj["kind"] in CRD_FILES and "autoscalerOptions" in cluster_spec(obj):
            assert {"requests", "limits"} <= set(cluster_spec(obj)["autoscalerOptions"]["resources"])


def test_api_group_fits_the_serve_replicas(rendered: list[Obj]) -> None:
    rayservice = the(rendered, "RayService")
    spec = cluster_spec(rayservice)
    api = groups(spec)["api"]
    (app,) = serve_config(rayservice)["applications"]
    (deployment,) = app["deployments"]
    options = deployment["ray_actor_options"]
    assert 0 < options["num_cpus"] <= 0.5
    assert options["resources"] == {"ripple-api": 1}
    # Also pins Serve's build task (it reads the keys) to api pods; KubeRay names Ray nodes by group.
    assert options["label_selector"] == {"ray.io/node-group": "api"}
    # One replica per api pod, exactly as many pods as replicas: every pod runs a proxy the probes can reach.
    assert ray_start_resources(api["rayStartParams"]) == {"ripple-api": 1}
    assert api["replicas"] == api["minReplicas"] == api["maxReplicas"] == deployment["num_replicas"]
    container = api["template"]["spec"]["containers"][0]
    for probe, path in (("startupProbe", "/health/startup"), ("livenessProbe", "/health/live")):
        assert container[probe]["httpGet"] == {"path": path, "port": "serve"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "serve"}
    assert {"name": "serve", "containerPort": 8000} in container["ports"]


def test_ripple_settings_and_secrets(rendered: list[Obj]) -> None:
    spec = cluster_spec(the(rendered, "RayService"))
    head_env = env_of(spec["headGroupSpec"]["template"]["spec"]["containers"][0])
    api_env = env_of(groups(spec)["api"]["template"]["spec"]["containers"][0])
    ripple = {k: v for k, v in head_env.items() if k.startswith("RIPPLE_") or k == "REDIS_STORE_PASSWORD"}
    assert {"RIPPLE_API_KEY", "RIPPLE_WORKER_KEY", "RIPPLE_REDIS_URL", "RIPPLE_DATA_DIR"} <= set(ripple)
    assert {k: api_env[k] for k in ripple} == ripple, "head and api pods must share Ripple's settings"
    capacity = sum(g["maxReplicas"] * int(g["rayStartParams"]["num-gpus"]) for g in gpu_groups(spec).values())
    assert int(ripple["RIPPLE_AUTOSCALER__MAX_GPUS"]["value"]) == capacity
    # KubeRay sets these itself from gcsFaultToleranceOptions and rejects user-set copies.
    assert not {"REDIS_PASSWORD", "RAY_REDIS_ADDRESS", "RAY_enable_autoscaler_v2"} & set(head_env)
    for name, group in gpu_groups(spec).items():  # user handlers run there: no Ripple keys
        refs = [n["name"] for n in walk(group) if "key" in n and "name" in n and "secretKeyRef" not in n]
        assert "ripple-keys" not in refs, name
    url = ripple["RIPPLE_REDIS_URL"]["value"]
    assert url == "redis://:$(REDIS_STORE_PASSWORD)@ripple-redis:6379/0"
    names = list(head_env)
    assert names.index("REDIS_STORE_PASSWORD") < names.index("RIPPLE_REDIS_URL")  # $(VAR) needs it first


def test_references_resolve(rendered: list[Obj]) -> None:
    """Services select pods that exist, Secrets and keys referenced exist, the Ingress hits ripple-api."""
    rayservice = the(rendered, "RayService")
    spec = cluster_spec(rayservice)
    secrets = {s["metadata"]["name"]: set(s["stringData"]) for s in of_kind(extra_docs(), "Secret")}
    for ref in (n["secretKeyRef"] for n in walk(rendered) if "secretKeyRef" in n):
        assert ref["key"] in secrets[ref["name"]], ref
    for secret in of_kind(rendered, "Secret"):  # dev only: same names and keys as the template
        assert set(secret["stringData"]) == secrets[secret["metadata"]["name"]]
    ray_pods = [
        {**p["template"]["metadata"]["labels"], "ray.io/is-ray-node": "yes"}
        for p in [spec["headGroupSpec"], *groups(spec).values()]
    ]
    pods = ray_pods + [o["spec"]["template"]["metadata"]["labels"] for o in of_kind(rendered, "StatefulSet")]
    for service in of_kind(rendered, "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), service["metadata"]["name"]
    redis = next(s for s in of_kind(rendered, "Service") if s["metadata"]["name"] == "ripple-redis")
    assert (
        spec["gcsFaultToleranceOptions"]["redisAddress"]
        == f"ripple-redis:{redis['spec']['ports'][0]['port']}"
    )
    backend = the(rendered, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    serve_service = rayservice["spec"]["serveService"]
    assert backend == {"name": serve_service["metadata"]["name"], "port": {"name": "serve"}}
    head_ports = {
        p["name"]: p["containerPort"]
        for p in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert head_ports["serve"] == 8000 and head_ports["metrics"] == 8080 and head_ports["dashboard"] == 8265
    monitors = of_kind(extra_docs(), "ServiceMonitor")
    services = [
        *of_kind(rendered, "Service"),
        {"metadata": serve_service["metadata"], "spec": serve_service["spec"]},
    ]
    for monitor in monitors:
        (service,) = [
            s
            for s in services
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"].get("labels", {}).items()
        ]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
            p["name"] for p in service["spec"]["ports"]
        }


MIB = {"Mi": 1, "Gi": 1024}


def redis_flags(statefulset: Obj, password: str = "pw") -> dict[str, str]:
    """The flags the Redis container's command gives ``redis-server``, as its shell expands them with the
    environment Kubernetes gives it (the memory limit through the Downward API, in MiB): the command run by
    a real ``sh`` with ``redis-server`` standing for a program that prints its arguments."""
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    limit = container["resources"]["limits"]["memory"]
    downward = next(e for e in container["env"] if e["name"] == "MEMORY_LIMIT_MIB")["valueFrom"]
    assert downward["resourceFieldRef"] == {
        "containerName": "redis",
        "resource": "limits.memory",
        "divisor": "1Mi",
    }
    env = {
        "PATH": "/usr/bin:/bin",
        "MEMORY_LIMIT_MIB": str(int(limit[:-2]) * MIB[limit[-2:]]),
        "REDIS_PASSWORD": password,
    }
    assert script.startswith("exec redis-server ")
    printed = subprocess.run(
        ["sh", "-c", script.replace("exec redis-server ", "exec printf '%s\\n' ", 1)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.splitlines()
    return dict(zip(printed[::2], printed[1::2], strict=True))


def test_redis_persists_requires_a_password_and_refuses_writes_before_its_memory_limit(
    rendered: list[Obj],
) -> None:
    redis = the(rendered, "StatefulSet")
    flags = redis_flags(redis, password="a b'c")
    assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
    assert flags["--requirepass"] == "a b'c", "one argument, whatever the password holds"
    assert flags["--maxmemory-policy"] == "noeviction"
    limit = redis["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
    limit_mib = int(limit[:-2]) * MIB[limit[-2:]]
    assert flags["--maxmemory"] == f"{limit_mib * 3 // 4}mb", "3/4 of the limit: full before an OOM kill"
    assert redis["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_overlays_differ_where_they_should() -> None:
    dev, prod = render(KUBERAY / "overlays/dev"), render(KUBERAY / "overlays/prod")
    assert redis_flags(the(render(KUBERAY / "base"), "StatefulSet"))["--maxmemory"] == "1536mb", "of 2Gi"
    assert redis_flags(the(dev, "StatefulSet"))["--maxmemory"] == "384mb", "3/4 of dev's 512Mi"
    assert redis_flags(the(prod, "StatefulSet"))["--maxmemory"] == "6144mb", "3/4 of prod's 8Gi"
    assert list(gpu_groups(cluster_spec(the(dev, "RayService")))) == ["gpu-l4"]
    assert all("not-secret" in v for s in of_kind(dev, "Secret") for v in s["stringData"].values())
    assert of_kind(prod, "Secret") == [], "prod secrets are created with kubectl, never from the repository"
    pdb = the(prod, "PodDisruptionBudget")
    assert (
        pdb["spec"]["selector"]["matchLabels"].items()
        <= the(prod, "StatefulSet")["spec"]["template"]["metadata"]["labels"].items()
    )
    assert of_kind(prod, "ServiceMonitor") == []


def test_rayjob_example_runs_a_batch_on_the_ripple_cluster() -> None:
    (job,) = of_kind(extra_docs(), "RayJob")
    spec = job["spec"]
    assert set(spec["clusterSelector"]) == {"ray.io/cluster"} and "rayClusterSpec" not in spec
    assert spec["shutdownAfterJobFinishes"] is False  # True would delete Ripple's own cluster
    assert spec.get("ttlSecondsAfterFinished", 0) == 0
    assert spec["submissionMode"] in ("K8sJobMode", "HTTPMode")  # SidecarMode cannot use clusterSelector
    argv = shlex.split(spec["entrypoint"])
    assert argv[:3] == ["python", "-m", "orchestrator.batch"]
    assert {"--endpoint", "--input", "--output"} <= set(argv)
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    for obj in of_kind(extra_docs(), "RayJob") + of_kind(render(KUBERAY / "base"), "RayService"):
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,46}[a-z0-9])?", obj["metadata"]["name"])  # DNS-1035


# ================================================================ the real application
def _manifest_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Sets the head pod's environment (secrets replaced by test values, $(VAR) expanded)."""
    rayservice = the(render(KUBERAY / "base"), "RayService")
    env: dict[str, str] = {}
    for var in cluster_spec(rayservice)["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]:
        value = var.get("value", "test-secret-value")
        env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
    for name in [n for n in os.environ if n.startswith("RIPPLE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RIPPLE_DATA_DIR", str(tmp_path))


def _import_or_skip(module: str) -> Any:
    reason = f"{module} does not exist yet: this check runs once it does"
    if importlib.util.find_spec(module.partition(".")[0]) is None:
        pytest.skip(reason)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.partition(".")[0]:
            raise
        pytest.skip(reason)


def test_manifest_settings_parse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every RIPPLE_* variable of the pods is a valid setting (Settings forbids unknown ones)."""
    _manifest_env(monkeypatch, tmp_path)
    config = _import_or_skip("orchestrator.config")
    settings = config.load_settings()
    spec = cluster_spec(the(render(KUBERAY / "base"), "RayService"))
    assert settings.autoscaler.max_gpus == sum(
        g["maxReplicas"] * int(g["rayStartParams"]["num-gpus"]) for g in gpu_groups(spec).values()
    )
    for name, group in gpu_groups(spec).items():
        drain_s = float(
            env_of(group["template"]["spec"]["containers"][0])["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"][
                "value"
            ]
        )
        assert settings.drain_timeout_s == drain_s, name
    assert settings.redis_url is not None and settings.api_key is not None and settings.worker_key is not None


def test_serve_app_import_path_resolves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """serve_app imports under the head pod's environment; serveConfigV2 names deployments it defines."""
    _manifest_env(monkeypatch, tmp_path)
    module = _import_or_skip("serve_app")
    app = module.app
    assert isinstance(app, ray.serve.Application) or callable(app), "an Application or an app builder"
    defined = {d.name for d in vars(module).values() if isinstance(d, ray.serve.Deployment)}
    (application,) = serve_config(the(render(KUBERAY / "base"), "RayService"))["applications"]
    assert {d["name"] for d in application["deployments"]} <= defined
