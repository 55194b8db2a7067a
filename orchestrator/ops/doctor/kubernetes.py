"""``ripple doctor`` inside a KubeRay pod: read the RayCluster's pods, their events and the RayCluster.

:func:`detect` says whether this process runs in a Kubernetes pod (a service account token mounted at
:data:`SA_DIR` and ``KUBERNETES_SERVICE_HOST`` set) and where: the API server, the namespace (the service
account's), the RayCluster (``RAY_CLUSTER_NAME``, which KubeRay sets on Ray containers, else the
``ray.io/cluster`` label of this pod, read through the API). :func:`gather` reads, with the ``kubernetes``
client and the pod's own token, what :mod:`orchestrator.ops.doctor.rules_k8s` needs, as
:class:`~orchestrator.ops.doctor.facts_k8s.KubeFacts`. It only reads (kuberay/base/rbac.yaml grants get/list
on pods, events and rayclusters) and never raises: what it cannot read becomes an entry of ``errors``.
Outside Kubernetes :func:`gather_if_in_cluster` returns None without importing the client.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from orchestrator.ops.doctor.facts_k8s import (
    GPU_RESOURCE,
    ContainerFacts,
    EventFacts,
    GroupFacts,
    KubeFacts,
    PodFacts,
)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CLUSTER_LABEL = "ray.io/cluster"
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class InCluster:
    """Where the Kubernetes API is and what to ask it about. ``pod_name``: this pod (``HOSTNAME``)."""

    host: str
    token_path: Path
    ca_path: Path | None
    namespace: str
    cluster: str | None
    pod_name: str | None


def detect(env: Mapping[str, str] | None = None, sa_dir: Path = SA_DIR) -> InCluster | None:
    """The in-cluster target, or None when this process does not run in a Kubernetes pod."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
    token = sa_dir / "token"
    if not host or not token.is_file():
        return None
    try:
        namespace = (sa_dir / "namespace").read_text().strip()
    except OSError:
        namespace = env.get("POD_NAMESPACE", "default")
    ca = sa_dir / "ca.crt"
    return InCluster(
        host=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        token_path=token,
        ca_path=ca if ca.is_file() else None,
        namespace=namespace,
        cluster=env.get("RAY_CLUSTER_NAME") or None,
        pod_name=env.get("HOSTNAME") or None,
    )


def gather_if_in_cluster(timeout_s: float = TIMEOUT_S) -> KubeFacts | None:
    """:func:`gather` for :func:`detect`'s target; None outside Kubernetes."""
    target = detect()
    return None if target is None else gather(target, timeout_s)


def _api_client(target: InCluster) -> Any:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = target.host
    cfg.api_key = {"authorization": target.token_path.read_text().strip()}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    if target.ca_path is not None:
        cfg.ssl_ca_cert = str(target.ca_path)
    cfg.retries = 0
    return client.ApiClient(cfg)


def _why(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status is not None:  # kubernetes.client.ApiException
        return f"{status} {getattr(exc, 'reason', '')}".strip()
    return f"{type(exc).__name__}: {exc}"[:300]


def gather(target: InCluster, timeout_s: float = TIMEOUT_S) -> KubeFacts:
    """Read the RayCluster's pods (label ``ray.io/cluster``), the namespace's pod events, the RayCluster."""
    errors: dict[str, str] = {}
    try:
        from kubernetes import client

        api = _api_client(target)
    except Exception as exc:  # no client, unreadable token: a fact, not a crash
        return KubeFacts(target.namespace, target.cluster, errors={"client": _why(exc)})
    with contextlib.closing(api):
        core = client.CoreV1Api(api)
        cluster = target.cluster
        if cluster is None and target.pod_name:
            try:
                me: Any = core.read_namespaced_pod(
                    target.pod_name, target.namespace, _request_timeout=timeout_s
                )
                cluster = (me.metadata.labels or {}).get(CLUSTER_LABEL)
            except Exception as exc:
                errors["pod"] = _why(exc)
        if cluster is None:
            errors.setdefault("cluster", f"no {CLUSTER_LABEL} label on this pod and no RAY_CLUSTER_NAME")
            return KubeFacts(target.namespace, None, errors=errors)
        pods: list[Any] = []
        events: list[Any] = []
        raycluster: Any = None
        try:
            pods = core.list_namespaced_pod(
                target.namespace, label_selector=f"{CLUSTER_LABEL}={cluster}", _request_timeout=timeout_s
            ).items
        except Exception as exc:
            errors["pods"] = _why(exc)
        try:
            events = core.list_namespaced_event(
                target.namespace, field_selector="involvedObject.kind=Pod", _request_timeout=timeout_s
            ).items
        except Exception as exc:
            errors["events"] = _why(exc)
        try:
            raycluster = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "ray.io", "v1", target.namespace, "rayclusters", cluster, _request_timeout=timeout_s
            )
        except Exception as exc:
            errors["raycluster"] = _why(exc)
    by_pod: dict[str, list[EventFacts]] = {}
    for ev in events:
        obj = ev.involved_object
        if obj is not None and obj.name:
            by_pod.setdefault(obj.name, []).append(_event(ev))
    return KubeFacts(
        namespace=target.namespace,
        cluster=cluster,
        pods=tuple(_pod(p, by_pod.get(p.metadata.name, [])) for p in pods),
        groups=_groups(raycluster),
        errors=errors,
    )


def _epoch(value: Any) -> float | None:
    return value.timestamp() if isinstance(value, datetime) else None


def _event(ev: Any) -> EventFacts:
    last = ev.last_timestamp or ev.event_time or ev.first_timestamp
    return EventFacts(
        reason=ev.reason or "",
        message=ev.message or "",
        type=ev.type or "Normal",
        count=int(ev.count or 1),
        last_s=_epoch(last),
    )


def _quantity(resources: Any, name: str) -> str | None:
    if resources is None:
        return None
    for part in (resources.limits, resources.requests):
        if part and name in part:
            return str(part[name])
    return None


def _container(status: Any, spec: Any) -> ContainerFacts:
    state, last = status.state, status.last_state
    waiting = state.waiting if state else None
    terminated = state.terminated if state else None
    last_term = last.terminated if last else None
    return ContainerFacts(
        name=status.name,
        ready=bool(status.ready),
        restarts=int(status.restart_count or 0),
        waiting_reason=waiting.reason if waiting else None,
        waiting_message=waiting.message if waiting else None,
        terminated_reason=terminated.reason if terminated else None,
        last_terminated_reason=last_term.reason if last_term else None,
        last_exit_code=last_term.exit_code if last_term else None,
        memory_limit=_quantity(spec.resources, "memory") if spec is not None else None,
        image=spec.image if spec is not None else status.image,
    )


def _pod(pod: Any, events: Iterable[EventFacts]) -> PodFacts:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    labels = meta.labels or {}
    specs = {c.name: c for c in [*(spec.init_containers or []), *(spec.containers or [])]}
    statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    unschedulable = next(
        (
            c.message or c.reason
            for c in status.conditions or []
            if c.type == "PodScheduled" and c.status == "False"
        ),
        None,
    )
    gpus = sum(float(_quantity(c.resources, GPU_RESOURCE) or 0) for c in spec.containers or [])
    failed = status.phase == "Failed"
    return PodFacts(
        name=meta.name,
        group=labels.get("ray.io/group", ""),
        node_type=labels.get("ray.io/node-type", ""),
        phase=status.phase or "Unknown",
        gpus=gpus,
        created_s=_epoch(meta.creation_timestamp),
        deleting=meta.deletion_timestamp is not None,
        node_name=spec.node_name,
        unschedulable=unschedulable,
        failed_reason=(status.reason or "Failed") if failed else None,
        failed_message=status.message if failed else None,
        containers=tuple(_container(s, specs.get(s.name)) for s in statuses)
        or tuple(ContainerFacts(name=c.name, image=c.image) for c in spec.containers or []),
        events=tuple(sorted(events, key=lambda e: e.last_s or 0.0)),
    )


def _groups(raycluster: Mapping[str, Any] | None) -> tuple[GroupFacts, ...]:
    if not raycluster:
        return ()
    out = []
    for g in raycluster.get("spec", {}).get("workerGroupSpecs", []):
        pod = g.get("template", {}).get("spec", {})
        gpus = 0.0
        for c in pod.get("containers", []):
            res = c.get("resources", {})
            limits, requests = res.get("limits", {}), res.get("requests", {})
            gpus += float(limits.get(GPU_RESOURCE) or requests.get(GPU_RESOURCE) or 0)
        if not gpus:
            gpus = float(g.get("rayStartParams", {}).get("num-gpus") or 0)
        out.append(
            GroupFacts(
                name=str(g.get("groupName", "")),
                replicas=int(g.get("replicas") or 0),
                min_replicas=int(g.get("minReplicas") or 0),
                max_replicas=int(g.get("maxReplicas") or 0),
                gpus_per_pod=gpus,
                node_selector=dict(pod.get("nodeSelector") or {}),
            )
        )
    return tuple(out)
