"""Settings: defaults < YAML file (``--config`` / ``RIPPLE_CONFIG``) < ``RIPPLE_*`` env < command-line flags.

Validated once, here, at the edge: :func:`load_settings` raises :class:`ConfigError` naming the setting and
echoing the bad value. Pure code receives a :class:`Settings` (or the values it needs), never the
environment. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from orchestrator.core.errors import ConfigError


class AutoscalerSettings(BaseModel):
    """Cluster-wide autoscaler settings (``RIPPLE_AUTOSCALER__*``)."""

    enabled: bool = True
    interval_s: float = Field(default=2.0, gt=0, le=300)
    max_gpus: float | None = Field(default=None, ge=0, description="Cap on GPUs Ripple may use.")
    high_load_threshold: int = Field(default=10, ge=1)
    high_load_boost: int = Field(default=20, ge=0, le=100)
    starvation_step_s: float = Field(default=300, gt=0)
    starvation_boost_per_step: int = Field(default=10, ge=0, le=100)
    starvation_max_boost: int = Field(default=30, ge=0, le=100)
    preempt_busy: bool = False


class Settings(BaseSettings):
    """Every setting of a Ripple instance. See the contract for the user-facing ones."""

    model_config = SettingsConfigDict(
        env_prefix="RIPPLE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path(".ripple")
    redis_url: SecretStr | None = None
    num_gpus: float | None = Field(default=None, ge=0)
    num_cpus: float | None = Field(default=None, ge=0)
    api_key: SecretStr | None = None
    worker_key: SecretStr | None = None
    insecure: bool = False
    namespace: str = "ripple"
    key_prefix: str = "ripple:"
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    lease_grace_s: float = Field(default=30.0, gt=0, description="Unreported lease age before reclaim.")
    take_wait_s: float = Field(default=20.0, ge=0, le=60, description="Long-poll hold of job-take.")
    stop_wait_s: float = Field(default=20.0, ge=0, le=60, description="Long-poll hold of job-stop.")
    runsync_wait_s: float = Field(default=90.0, ge=0, le=300)
    sweep_interval_s: float = Field(default=0.5, gt=0, le=60)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    drain_timeout_s: float = Field(default=600.0, gt=0, description="Longest a draining worker may take.")
    serve_replicas: int = Field(default=1, ge=1, le=64)
    dashboard: bool = True
    dashboard_port: int = Field(default=8265, ge=0, le=65535)
    log_level: str = "INFO"
    autoscaler: AutoscalerSettings = AutoscalerSettings()

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a non-empty string without spaces")
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_path = os.environ.get("_RIPPLE_CONFIG_FILE")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_path:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    def public(self) -> dict[str, Any]:
        """The settings as JSON with secrets masked, for logs and ``doctor``."""
        return self.model_dump(mode="json")


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Resolve settings from all sources; ``overrides`` (flags) win, ``None`` values are ignored.

    Raises:
        ConfigError: naming each invalid setting with its bad value and why.
    """
    path = config_file or os.environ.get("RIPPLE_CONFIG")
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"config file {str(path)!r} (RIPPLE_CONFIG / --config) does not exist")
    flags = {k: v for k, v in overrides.items() if v is not None}
    previous = os.environ.get("_RIPPLE_CONFIG_FILE")
    try:
        if path is not None:
            os.environ["_RIPPLE_CONFIG_FILE"] = str(path)
        return Settings(**flags)
    except ValidationError as exc:
        raise ConfigError(_describe(exc), [e["loc"] for e in exc.errors()]) from None
    finally:
        if previous is None:
            os.environ.pop("_RIPPLE_CONFIG_FILE", None)
        else:
            os.environ["_RIPPLE_CONFIG_FILE"] = previous


_NOT_SECRET = frozenset({"key_prefix"})  # names with "key" or "url" in them whose values are safe to echo


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        env = "RIPPLE_" + "__".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        secret = name not in _NOT_SECRET and any(s in name.lower() for s in ("key", "url", "secret", "token"))
        shown = "***" if secret else repr(value)
        lines.append(f"invalid setting {name} ({env}) = {shown}: {err['msg']}")
    return "; ".join(lines)


@dataclass(frozen=True)
class QueueConfig:
    """What the job queue actor needs from the settings (no secrets but the store URL)."""

    redis_url: str
    key_prefix: str = "ripple:"
    heartbeat_timeout_s: float = 60.0
    lease_grace_s: float = 30.0
    take_wait_s: float = 20.0
    stop_wait_s: float = 20.0
    runsync_wait_s: float = 90.0
    sweep_interval_s: float = 0.5
    webhook_max_attempts: int = 5
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings, redis_url: str) -> QueueConfig:
        """Pick the queue's values out of ``settings``; ``redis_url`` is the resolved store URL."""
        return cls(
            redis_url=redis_url,
            key_prefix=settings.key_prefix,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            lease_grace_s=settings.lease_grace_s,
            take_wait_s=settings.take_wait_s,
            stop_wait_s=settings.stop_wait_s,
            runsync_wait_s=settings.runsync_wait_s,
            sweep_interval_s=settings.sweep_interval_s,
            webhook_max_attempts=settings.webhook_max_attempts,
            webhook_backoff_s=settings.webhook_backoff_s,
            webhook_timeout_s=settings.webhook_timeout_s,
        )
