"""Doctor rules about the Kubernetes side of a KubeRay deployment (pure): pods that cannot be scheduled,
that the kubelet refused or ended, that crash-loop, were OOM-killed or cannot pull their image, and GPU
worker groups at their ``maxReplicas``.

They read :attr:`Facts.kubernetes <orchestrator.ops.doctor.facts.Facts.kubernetes>` (None outside
Kubernetes: no finding). A problem on the head or the API pods stops Ripple for everyone (HIGH); on a GPU
worker pod it holds back that group's capacity (MEDIUM).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from orchestrator.ops.doctor.facts import Facts, Finding, Severity, _f
from orchestrator.ops.doctor.facts_k8s import GPU_RESOURCE, GroupFacts, KubeFacts, PodFacts

IMAGE_PULL_REASONS = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9][A-Za-z0-9./_-]*[A-Za-z0-9])")


def _severity(pod: PodFacts) -> Severity:
    return "MEDIUM" if pod.gpus > 0 else "HIGH"


def _target(pod: PodFacts) -> str:
    return "the head" if pod.node_type == "head" else f"group {pod.group}"


def _where(k: KubeFacts, pod: PodFacts) -> str:
    role = "the head" if pod.node_type == "head" else f"group {pod.group or '?'}"
    return f"Pod {pod.name} ({role})"


def insufficient_resources(pod: PodFacts) -> list[str]:
    """Resources the scheduler said no node has enough of ("Insufficient nvidia.com/gpu"), from the pod's
    PodScheduled condition and its FailedScheduling events; sorted, without repeats."""
    texts = [pod.unschedulable or ""] + [e.message for e in pod.events if e.reason == "FailedScheduling"]
    return sorted({m for t in texts for m in _INSUFFICIENT.findall(t)})


def _pending(k: KubeFacts, pod: PodFacts, groups: Mapping[str, GroupFacts]) -> Finding | None:
    if pod.phase != "Pending" or pod.deleting:
        return None
    scheduling = [e for e in pod.events if e.reason == "FailedScheduling"]
    if pod.unschedulable is None and not scheduling:
        return None
    message = pod.unschedulable or scheduling[-1].message
    missing = insufficient_resources(pod)
    group = groups.get(pod.group)
    selector = dict(group.node_selector) if group else {}
    if GPU_RESOURCE in missing:
        action = (
            f"No node with a free {GPU_RESOURCE} matches this pod"
            + (f" (nodeSelector {selector})" if selector else "")
            + ": add GPU nodes of that kind (or let the cluster autoscaler add them to that node pool), "
            "check that the group's nodeSelector and tolerations match your GPU nodes, or lower the "
            "group's maxReplicas (and RIPPLE_AUTOSCALER__MAX_GPUS) to what the cluster has."
        )
    elif missing:
        action = (
            f"No node has enough {', '.join(missing)} for this pod's requests: add nodes, or lower the "
            f"requests of {_target(pod)} in the RayService."
        )
    else:
        action = (
            "The scheduler cannot place it (see the message): check the group's nodeSelector, tolerations "
            f"and affinity against your nodes (`kubectl -n {k.namespace} describe pod {pod.name}`)."
        )
    what = f"lack of {', '.join(missing)}" if missing else "no matching node"
    return _f(
        _severity(pod),
        "kubernetes",
        "k8s.pod_unschedulable",
        f"{_where(k, pod)} is Pending: it cannot be scheduled ({what})",
        action,
        message,
    )


def _failed(k: KubeFacts, pod: PodFacts) -> Finding | None:
    """A pod the kubelet refused (``SysctlForbidden``: the manifests' ``net.ipv4.ip_local_port_range``) or
    ended (``Evicted``, ``OutOfcpu``, ...): its containers never run, or no longer do."""
    if pod.failed_reason is None or pod.deleting:
        return None
    describe = f"`kubectl -n {k.namespace} describe pod {pod.name}`"
    if pod.failed_reason == "SysctlForbidden":
        action = (
            "The node's kubelet refuses a sysctl of the pod: the Ray pods set "
            "net.ipv4.ip_local_port_range, the range Serve replicas' gRPC servers listen on "
            "(docs/kuberay.md, \"Serve's proxy over gRPC\"). Allow it on these nodes (it is on Kubernetes' "
            "safe list; an admission policy may forbid sysctls), or go back to Serve's actor calls: "
            "RAY_SERVE_PROXY_USE_GRPC=0 on every Ray container, and drop the sysctl and the 32768-60999 "
            "range of the ripple-ray-internal NetworkPolicy."
        )
    else:
        action = (
            f"Read why in {describe}; KubeRay starts a new pod for a failed one. If it keeps happening, "
            f"give {_target(pod)} what its node ran short of (requests, limits) or fix the node."
        )
    return _f(
        _severity(pod),
        "kubernetes",
        "k8s.pod_failed",
        f"{_where(k, pod)} failed: the kubelet refused or ended it ({pod.failed_reason})",
        action,
        pod.failed_message,
    )


def _container_findings(k: KubeFacts, pod: PodFacts) -> list[Finding]:
    out: list[Finding] = []
    where = _where(k, pod)
    logs = f"`kubectl -n {k.namespace} logs {pod.name} -c {{c}} --previous`"
    for c in pod.containers:
        if c.waiting_reason in IMAGE_PULL_REASONS:
            out.append(
                _f(
                    _severity(pod),
                    "kubernetes",
                    "k8s.image_pull",
                    f"{where} cannot pull image {c.image or '?'} for container {c.name} ({c.waiting_reason})",
                    "Check that the image name and tag exist in the registry (the RayService's image "
                    "fields), and that the pod can pull from it (imagePullSecrets, registry credentials).",
                    c.waiting_message,
                )
            )
        oom = "OOMKilled" in (c.last_terminated_reason, c.terminated_reason)
        if oom:
            limit = f" (memory limit {c.memory_limit})" if c.memory_limit else ""
            target = _target(pod)
            out.append(
                _f(
                    _severity(pod),
                    "kubernetes",
                    "k8s.oom_killed",
                    f"{where}: container {c.name} was OOM-killed{limit}",
                    f"Raise the memory request and limit of {target} in the RayService (its overlay's "
                    "rayservice-patch.yaml), or give the endpoints there less to hold: lower their "
                    "concurrency or memoryMb so fewer or smaller replicas share a pod.",
                    {"restarts": c.restarts, "exitCode": c.last_exit_code},
                )
            )
        if c.waiting_reason == "CrashLoopBackOff":
            last = c.last_terminated_reason or "?"
            code = f", exit code {c.last_exit_code}" if c.last_exit_code is not None else ""
            out.append(
                _f(
                    _severity(pod),
                    "kubernetes",
                    "k8s.crash_loop",
                    f"{where}: container {c.name} is crash-looping ({c.restarts} restarts; last run ended "
                    f"{last}{code})",
                    f"Read why its last run ended: {logs.format(c=c.name)}"
                    + (" (it ran out of memory: see the OOM finding)" if oom else "")
                    + "; fix the cause (image, settings, secrets) and the pod restarts on its own.",
                    c.waiting_message,
                )
            )
    return out


def _groups_at_max(f: Facts, k: KubeFacts) -> list[Finding]:
    demand = (f.cluster or {}).get("pendingDemand") or []
    gpu_demand = any("GPU" in (d.get("resources") or {}) for d in demand if isinstance(d, Mapping))
    out: list[Finding] = []
    for g in k.groups:
        if g.gpus_per_pod <= 0 or g.max_replicas <= 0:
            continue
        pods = [p for p in k.pods if p.group == g.name and not p.deleting]
        current = max(g.replicas, len(pods))
        if current < g.max_replicas:
            continue
        out.append(
            _f(
                "MEDIUM" if gpu_demand else "LOW",
                "kubernetes",
                "k8s.group_at_max",
                f"GPU worker group {g.name} is at its maxReplicas ({current} of {g.max_replicas} pods)"
                + ("; Ray has GPU demand it cannot place" if gpu_demand else ""),
                f"More replicas needing this group's GPUs wait until one frees up. To allow more, raise "
                f"{g.name}'s maxReplicas in the RayService and RIPPLE_AUTOSCALER__MAX_GPUS with it (the sum "
                "of maxReplicas x GPUs over the GPU groups), if the cluster has the GPUs.",
                {"group": g.name, "replicas": current, "maxReplicas": g.max_replicas},
            )
        )
    return out


def _unreadable(k: KubeFacts) -> list[Finding]:
    if not k.errors:
        return []
    forbidden = any(v.startswith(("401", "403")) for v in k.errors.values())
    action = (
        "Give the head pod read access: apply kuberay/base/rbac.yaml (Role ripple-doctor) and set "
        "serviceAccountName: ripple on the head pod template."
        if forbidden
        else "Check that the pod can reach the Kubernetes API (KUBERNETES_SERVICE_HOST) and that KubeRay "
        "labels it with ray.io/cluster."
    )
    return [
        _f(
            "MEDIUM",
            "kubernetes",
            "k8s.unreadable",
            f"Doctor could not read {', '.join(sorted(k.errors))} from the Kubernetes API",
            action,
            dict(k.errors),
        )
    ]


def check_kubernetes(f: Facts, now_s: float) -> list[Finding]:
    """Every Kubernetes finding; none outside Kubernetes (``f.kubernetes`` is None)."""
    k = f.kubernetes
    if k is None:
        return []
    groups = {g.name: g for g in k.groups}
    out = _unreadable(k)
    for pod in k.pods:
        for finding in (_pending(k, pod, groups), _failed(k, pod)):
            if finding is not None:
                out.append(finding)
        out += _container_findings(k, pod)
    return out + _groups_at_max(f, k)


def pod_rows(k: KubeFacts) -> list[dict[str, Any]]:
    """One row per pod for the report: name, group, phase, ready containers, restarts, what it waits on."""
    rows = []
    for p in sorted(k.pods, key=lambda p: (p.node_type != "head", p.group, p.name)):
        waiting = [c.waiting_reason for c in p.containers if c.waiting_reason]
        rows.append(
            {
                "name": p.name,
                "group": p.group,
                "phase": "Terminating" if p.deleting else p.phase,
                "ready": f"{sum(c.ready for c in p.containers)}/{len(p.containers)}",
                "restarts": sum(c.restarts for c in p.containers),
                "gpus": p.gpus,
                "node": p.node_name,
                "waiting": ", ".join(waiting)
                or p.failed_reason
                or ("Unschedulable" if p.unschedulable else None),
            }
        )
    return rows
