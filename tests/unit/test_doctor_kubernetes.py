"""``ripple doctor`` inside a KubeRay pod, against recorded Kubernetes API responses.

A small HTTP server on 127.0.0.1 plays the Kubernetes API: it serves the JSON under fixtures/k8s (shaped as
the real API answers: PodList, EventList, a RayCluster, a 403 Status), checks the bearer token and the
selectors the real server would filter on, and records what was asked. The real ``kubernetes`` client talks
to it end to end through :func:`orchestrator.ops.doctor.kubernetes.gather`; the findings come from the pure
rules of :mod:`orchestrator.ops.doctor.rules_k8s` through :func:`diagnose`. Nothing leaves loopback.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from orchestrator.ops.doctor import kubernetes as k8s
from orchestrator.ops.doctor.diagnose import diagnose, exit_code
from orchestrator.ops.doctor.facts import Facts, Finding
from orchestrator.ops.doctor.facts_k8s import KubeFacts
from orchestrator.ops.doctor.report import render_pods, report
from orchestrator.ops.doctor.rules_k8s import insufficient_resources

pytestmark = pytest.mark.timeout(30)

FIXTURES = Path(__file__).parent / "fixtures" / "k8s"
NS = "ripple"
CLUSTER = "ripple-raycluster-x7k2p"
TOKEN = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3QifQ.sa-token.sig"
NOW_S = 1_796_432_000.0  # 2026-12-05T01:33:20Z


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class FakeApi:
    """Routes (path -> (status, body)) served to requests that carry the token; ``requests`` records them."""

    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, list[str]], str]] = field(default_factory=list)
    port: int = 0

    def scenario(self, pods: Any, events: Any, raycluster: Any) -> None:
        self.routes = {
            f"/api/v1/namespaces/{NS}/pods": (200, pods),
            f"/api/v1/namespaces/{NS}/events": (200, events),
            f"/apis/ray.io/v1/namespaces/{NS}/rayclusters/{CLUSTER}": (200, raycluster),
            f"/api/v1/namespaces/{NS}/pods/{CLUSTER}-head-9vz4c": (200, fixture("pod_head.json")),
        }


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            auth = self.headers.get("Authorization", "")
            api.requests.append((url.path, query, auth))
            if auth != f"Bearer {TOKEN}":
                return self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            if url.path not in api.routes:
                return self._send(404, _status(404, "NotFound", f"{url.path} not found"))
            code, body = api.routes[url.path]
            if code == 200 and body.get("kind") == "PodList":  # the real server filters by label
                selector = query.get("labelSelector", [""])[0]
                key, _, value = selector.partition("=")
                body = {
                    **body,
                    "items": [p for p in body["items"] if p["metadata"]["labels"].get(key) == value],
                }
            if code == 200 and body.get("kind") == "EventList":
                field_selector = query.get("fieldSelector", [""])[0]
                assert field_selector == "involvedObject.kind=Pod", field_selector
                body = {**body, "items": [e for e in body["items"] if e["involvedObject"]["kind"] == "Pod"]}
            return self._send(code, body)

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.port = server.server_address[1]
    # A short poll: shutdown() waits for the loop's next look (0.5 s by default), once a test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def sa_dir(tmp_path: Path) -> Path:
    """A service account mount as Kubernetes makes it (token, namespace, ca.crt)."""
    d = tmp_path / "serviceaccount"
    d.mkdir()
    (d / "token").write_text(TOKEN)
    (d / "namespace").write_text(NS)
    (d / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nnot used over http\n-----END CERTIFICATE-----\n")
    return d


def target_for(api: FakeApi, sa_dir: Path, **env: str) -> k8s.InCluster:
    """What :func:`detect` finds in a KubeRay pod, pointed at the fake API over plain HTTP on loopback."""
    found = k8s.detect(
        {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443", **env}, sa_dir
    )
    assert found is not None
    assert found.host == "https://10.96.0.1:443" and found.namespace == NS
    return replace(found, host=f"http://127.0.0.1:{api.port}", ca_path=None)


def troubled(api: FakeApi) -> None:
    api.scenario(
        fixture("pods_troubled.json"), fixture("events_troubled.json"), fixture("raycluster_troubled.json")
    )


def by_rule(findings: list[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.rule, []).append(f)
    return out


def facts_with(kube: KubeFacts, **kw: Any) -> Facts:
    return Facts(url="http://127.0.0.1:8000", reachable=True, ready=True, kubernetes=kube, **kw)


# ================================================================ detection
def test_outside_kubernetes_nothing_is_detected_or_reported(tmp_path: Path) -> None:
    assert k8s.detect({}, tmp_path) is None
    assert k8s.detect({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, tmp_path) is None  # no token mounted
    (tmp_path / "token").write_text(TOKEN)
    assert k8s.detect({}, tmp_path) is None  # a token file alone is not a pod
    if not k8s.SA_DIR.exists():  # this machine is not a pod: the real entry point finds nothing
        assert k8s.gather_if_in_cluster() is None
    plain = Facts(url="http://127.0.0.1:8000", reachable=True, ready=True)
    assert [f for f in diagnose(plain, NOW_S) if f.category == "kubernetes"] == []


def test_detect_reads_the_pod_environment(sa_dir: Path) -> None:
    found = k8s.detect(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443", "HOSTNAME": "p-1"}, sa_dir
    )
    assert found == k8s.InCluster(
        host="https://[fd00::1]:6443",
        token_path=sa_dir / "token",
        ca_path=sa_dir / "ca.crt",
        namespace=NS,
        cluster=None,
        pod_name="p-1",
    )


# ================================================================ gathering through the real client
def test_gather_reads_pods_events_and_the_raycluster(api: FakeApi, sa_dir: Path) -> None:
    troubled(api)

    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))

    assert kube.errors == {} and kube.cluster == CLUSTER and kube.namespace == NS
    assert {p.group for p in kube.pods} == {"headgroup", "api", "gpu-l4", "gpu-a100", "gpu-h100"}
    asked = {path: query for path, query, _ in api.requests}
    assert asked[f"/api/v1/namespaces/{NS}/pods"]["labelSelector"] == [f"ray.io/cluster={CLUSTER}"]
    assert all(auth == f"Bearer {TOKEN}" for _, _, auth in api.requests)
    pods = {p.group: p for p in kube.pods}
    assert pods["headgroup"].node_type == "head" and pods["headgroup"].containers[0].ready
    assert pods["gpu-l4"].phase == "Pending" and pods["gpu-l4"].gpus == 1.0
    assert insufficient_resources(pods["gpu-l4"]) == ["nvidia.com/gpu"]
    assert [e.reason for e in pods["gpu-l4"].events] == ["FailedScheduling", "NotTriggerScaleUp"]
    a100 = pods["gpu-a100"].containers[0]
    assert (a100.waiting_reason, a100.restarts, a100.last_terminated_reason, a100.last_exit_code) == (
        "CrashLoopBackOff",
        5,
        "OOMKilled",
        137,
    )
    assert a100.memory_limit == "80Gi"
    assert pods["gpu-h100"].containers[0].waiting_reason == "ImagePullBackOff"
    assert pods["gpu-a100"].events[0].last_s == pytest.approx(1796432561.0)  # 2026-12-05T01:02:41Z
    groups = {g.name: g for g in kube.groups}
    assert (groups["gpu-l4"].replicas, groups["gpu-l4"].max_replicas, groups["gpu-l4"].gpus_per_pod) == (
        1,
        1,
        1,
    )
    assert groups["gpu-l4"].node_selector == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert groups["api"].gpus_per_pod == 0


def test_cluster_name_comes_from_this_pods_label_without_ray_cluster_name(api: FakeApi, sa_dir: Path) -> None:
    troubled(api)

    kube = k8s.gather(target_for(api, sa_dir, HOSTNAME=f"{CLUSTER}-head-9vz4c"))

    assert kube.cluster == CLUSTER and len(kube.pods) == 5 and kube.errors == {}


def test_a_wrong_token_or_a_missing_role_become_findings_not_crashes(api: FakeApi, sa_dir: Path) -> None:
    troubled(api)
    api.routes[f"/api/v1/namespaces/{NS}/events"] = (403, fixture("status_forbidden.json"))

    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))

    assert kube.errors == {"events": "403 Forbidden"} and len(kube.pods) == 5
    (finding,) = by_rule(diagnose(facts_with(kube), NOW_S))["k8s.unreadable"]
    assert finding.severity == "MEDIUM" and "rbac.yaml" in finding.action

    (sa_dir / "token").write_text("stale-token")
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))
    assert set(kube.errors) == {"pods", "events", "raycluster"}
    assert all(v.startswith("401") for v in kube.errors.values()) and kube.pods == ()


def test_an_unreachable_api_is_a_fact(sa_dir: Path) -> None:
    found = k8s.detect({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "9"}, sa_dir)
    assert found is not None
    unreachable = replace(found, host="http://127.0.0.1:9", cluster=CLUSTER, ca_path=None)

    kube = k8s.gather(unreachable, timeout_s=2)

    assert set(kube.errors) == {"pods", "events", "raycluster"}
    assert by_rule(diagnose(facts_with(kube), NOW_S))["k8s.unreadable"][0].severity == "MEDIUM"


# ================================================================ the rules, on gathered facts
def test_troubled_cluster_findings_with_actions(api: FakeApi, sa_dir: Path) -> None:
    troubled(api)
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))

    found = by_rule(diagnose(facts_with(kube), NOW_S))

    (pending,) = found["k8s.pod_unschedulable"]
    assert pending.severity == "MEDIUM" and f"{CLUSTER}-gpu-l4-worker-h2m4w" in pending.issue
    assert "nvidia.com/gpu" in pending.issue and "nvidia.com/gpu" in pending.action
    assert "NVIDIA-L4" in pending.action and "maxReplicas" in pending.action
    assert "Insufficient nvidia.com/gpu" in pending.detail
    (crash,) = found["k8s.crash_loop"]
    assert "gpu-a100" in crash.issue and "5 restarts" in crash.issue and "OOMKilled" in crash.issue
    assert f"kubectl -n {NS} logs {CLUSTER}-gpu-a100-worker-q8r2d -c ray-worker --previous" in crash.action
    (oom,) = found["k8s.oom_killed"]
    assert "80Gi" in oom.issue and "memory" in oom.action and oom.detail == {"restarts": 5, "exitCode": 137}
    (pull,) = found["k8s.image_pull"]
    assert "ghcr.io/your-org/ripple:0.1.1-gpu" in pull.issue and "ImagePullBackOff" in pull.issue
    assert "imagePullSecrets" in pull.action
    (at_max,) = found["k8s.group_at_max"]
    assert at_max.severity == "LOW" and "gpu-l4" in at_max.issue and "1 of 1" in at_max.issue
    assert "RIPPLE_AUTOSCALER__MAX_GPUS" in at_max.action
    assert all(
        f.severity == "MEDIUM"
        for r in ("k8s.crash_loop", "k8s.oom_killed", "k8s.image_pull")
        for f in found[r]
    )
    assert "k8s.unreadable" not in found
    assert exit_code(diagnose(facts_with(kube), NOW_S)) == 0  # GPU pods: degraded, not down


def test_group_at_max_is_medium_when_ray_waits_for_gpus(api: FakeApi, sa_dir: Path) -> None:
    troubled(api)
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))
    demand = {"nodes": [], "aliveNodes": 2, "pendingDemand": [{"count": 2, "resources": {"GPU": 1.0}}]}

    (at_max,) = by_rule(diagnose(facts_with(kube, cluster=demand), NOW_S))["k8s.group_at_max"]

    assert at_max.severity == "MEDIUM" and "demand" in at_max.issue


def test_head_and_api_problems_are_high_even_when_ripple_is_unreachable(api: FakeApi, sa_dir: Path) -> None:
    pods = fixture("pods_troubled.json")
    head, api_pod = copy.deepcopy(pods["items"][0]), copy.deepcopy(pods["items"][1])
    head["status"]["containerStatuses"][0].update(
        ready=False,
        restartCount=3,
        state={
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
        },
        lastState={"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2026-12-05T01:01:00Z"}},
    )
    api_pod["spec"].pop("nodeName")
    api_pod["status"] = {
        "phase": "Pending",
        "qosClass": "Guaranteed",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "lastProbeTime": None,
                "lastTransitionTime": "2026-12-05T01:00:00Z",
                "message": "0/3 nodes are available: 3 Insufficient cpu, 3 Insufficient memory. preemption: "
                "0/3 nodes are available: 3 No preemption victims found for incoming pod.",
            }
        ],
    }
    api.scenario(
        {**pods, "items": [head, api_pod]}, fixture("events_healthy.json"), fixture("raycluster_healthy.json")
    )
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))
    down = Facts(url="http://ripple-api:8000", reachable=False, http_error="ConnectError", kubernetes=kube)

    findings = diagnose(down, NOW_S)
    found = by_rule(findings)

    (crash,) = found["k8s.crash_loop"]
    assert crash.severity == "HIGH" and "the head" in crash.issue and "exit code 1" in crash.issue
    (pending,) = found["k8s.pod_unschedulable"]
    assert pending.severity == "HIGH" and "cpu, memory" in pending.issue and "group api" in pending.action
    assert "config.unreachable" in found and exit_code(findings) == 1


def test_a_healthy_cluster_has_no_kubernetes_finding_and_lists_its_pods(api: FakeApi, sa_dir: Path) -> None:
    api.scenario(
        fixture("pods_healthy.json"), fixture("events_healthy.json"), fixture("raycluster_healthy.json")
    )
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))
    facts = facts_with(kube)

    findings = diagnose(facts, NOW_S)

    assert [f for f in findings if f.category == "kubernetes"] == []
    table = render_pods(kube)
    assert f"RayCluster {CLUSTER} in namespace {NS}: 2 pod(s)" in table
    assert f"{CLUSTER}-head-9vz4c" in table.splitlines()[2] and "Running" in table
    settings = type(
        "S", (), {"api_key": None, "worker_key": None, "redis_url": None, "public": lambda s: {}}
    )()
    rep = report(facts, findings, settings, False, NOW_S)
    assert rep["facts"]["kubernetes"]["rayCluster"] == CLUSTER
    assert [p["group"] for p in rep["facts"]["kubernetes"]["pods"]] == ["headgroup", "api"]
    assert rep["facts"]["kubernetes"]["pods"][0]["ready"] == "1/1"


def test_terminating_pods_are_not_reported_as_pending(api: FakeApi, sa_dir: Path) -> None:
    pods = fixture("pods_troubled.json")
    for p in pods["items"]:
        p["metadata"]["deletionTimestamp"] = "2026-12-05T01:03:00Z"
        p["metadata"]["deletionGracePeriodSeconds"] = 630
    api.scenario(pods, fixture("events_troubled.json"), fixture("raycluster_healthy.json"))
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))

    found = by_rule(diagnose(facts_with(kube), NOW_S))

    assert "k8s.pod_unschedulable" not in found and "k8s.group_at_max" not in found
    assert {r["phase"] for r in report_rows(kube)} == {"Terminating"}


def report_rows(kube: KubeFacts) -> list[dict[str, Any]]:
    from orchestrator.ops.doctor.rules_k8s import pod_rows

    return pod_rows(kube)


def test_pods_the_kubelet_refused_or_ended_are_findings_with_what_to_do(api: FakeApi, sa_dir: Path) -> None:
    """A Ray pod whose sysctl the node refuses (the manifests' ip_local_port_range) never runs: the head's is
    HIGH and names both ways out; an evicted GPU pod is MEDIUM; a terminating failed pod is not reported."""
    pods = fixture("pods_troubled.json")
    head, api_pod = copy.deepcopy(pods["items"][0]), copy.deepcopy(pods["items"][1])
    gpu = copy.deepcopy(next(p for p in pods["items"] if "gpu-a100" in p["metadata"]["name"]))
    forbidden = 'Pod forbidden sysctl: "net.ipv4.ip_local_port_range" not allowlisted'
    head["status"] = {"phase": "Failed", "reason": "SysctlForbidden", "message": forbidden}
    low = "The node was low on resource: memory."
    gpu["status"] = {"phase": "Failed", "reason": "Evicted", "message": low}
    api_pod["status"] = {"phase": "Failed", "reason": "Evicted", "message": low}
    api_pod["metadata"]["deletionTimestamp"] = "2026-12-05T01:03:00Z"
    items = {**pods, "items": [head, api_pod, gpu]}
    api.scenario(items, fixture("events_healthy.json"), fixture("raycluster_healthy.json"))
    kube = k8s.gather(target_for(api, sa_dir, RAY_CLUSTER_NAME=CLUSTER))

    findings = diagnose(facts_with(kube), NOW_S)
    sysctl, evicted = sorted(by_rule(findings)["k8s.pod_failed"], key=lambda f: f.severity != "HIGH")

    assert sysctl.severity == "HIGH" and "the head" in sysctl.issue and "SysctlForbidden" in sysctl.issue
    assert "net.ipv4.ip_local_port_range" in sysctl.action and "RAY_SERVE_PROXY_USE_GRPC=0" in sysctl.action
    assert sysctl.detail == forbidden
    assert evicted.severity == "MEDIUM" and "gpu-a100" in evicted.issue and "Evicted" in evicted.issue
    assert f"kubectl -n {NS} describe pod {gpu['metadata']['name']}" in evicted.action
    assert exit_code(findings) == 1
    rows = {r["name"]: r for r in report_rows(kube)}
    assert rows[head["metadata"]["name"]]["waiting"] == "SysctlForbidden"
    assert rows[api_pod["metadata"]["name"]]["phase"] == "Terminating"
