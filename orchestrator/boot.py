"""What the HTTP replicas and the control actors receive: the settings resolved once, on the driver."""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator.auth import AuthConfig
from orchestrator.config import AutoscalerSettings, QueueConfig, Settings
from orchestrator.core.rollout import DEFAULT_READY_TIMEOUT_S


@dataclass(frozen=True)
class BootConfig:
    """Everything the HTTP replicas and the control actors need, resolved once on the driver."""

    namespace: str
    queue: QueueConfig
    auth: AuthConfig
    max_body_bytes: int
    take_wait_s: float
    stop_wait_s: float
    runsync_wait_s: float
    data_dir: str
    embedded_store: bool
    autoscaler: AutoscalerSettings
    drain_timeout_s: float
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    dashboard_url: str | None = None
    max_package_bytes: int = 100 * 1024 * 1024
    packages_dir: str | None = None  # where code packages are kept too (``ripple up``: restored at start)


def boot_config(
    settings: Settings,
    store_url: str,
    embedded: bool,
    auth: AuthConfig,
    dashboard_url: str | None = None,
    packages_dir: str | None = None,
) -> BootConfig:
    """Freeze the resolved settings into what replicas and actors receive."""
    return BootConfig(
        namespace=settings.namespace,
        queue=replace(QueueConfig.from_settings(settings, store_url), packages_dir=packages_dir),
        auth=auth,
        max_body_bytes=settings.max_body_bytes,
        take_wait_s=settings.take_wait_s,
        stop_wait_s=settings.stop_wait_s,
        runsync_wait_s=settings.runsync_wait_s,
        data_dir=str(settings.data_dir.resolve()),
        embedded_store=embedded,
        autoscaler=settings.autoscaler,
        drain_timeout_s=settings.drain_timeout_s,
        ready_timeout_s=settings.ready_timeout_s,
        dashboard_url=dashboard_url,
        max_package_bytes=settings.max_package_bytes,
        packages_dir=packages_dir,
    )
