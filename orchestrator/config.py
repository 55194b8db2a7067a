"""Settings: defaults < YAML file (``--config`` / ``RIPPLE_CONFIG``) < ``RIPPLE_*`` env < command-line flags.

Validated once, here, at the edge: :func:`load_settings` raises :class:`ConfigError` naming the setting and
echoing the bad value. Pure code receives a :class:`Settings` (or the values it needs), never the
environment. Secrets are ``SecretStr`` so they never print by accident.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from orchestrator.core.autoscale.model import AutoscaleConfig, default_reclaim_after_s
from orchestrator.core.errors import ConfigError
from orchestrator.core.jobs import DEFAULT_KEEP_RESULTS_S
from orchestrator.core.net_policy import WebhookPolicy
from orchestrator.core.package_retention import DEFAULT_KEEP_VERSIONS, UNREFERENCED_GRACE_S
from orchestrator.core.rollout import DEFAULT_READY_TIMEOUT_S
from orchestrator.store.redis import RETRY_WHILE_RESTARTING_S

MIN_KEEP_RESULTS_S = 60.0
"""The shortest time a finished job may be kept (``RIPPLE_KEEP_RESULTS_S``), but 0 (for ever)."""

_POLICY = AutoscaleConfig()  # the policy's defaults, written once in orchestrator.core.autoscale.model


class AutoscalerSettings(BaseModel):
    """Cluster-wide autoscaler settings (``RIPPLE_AUTOSCALER__*``, or ``autoscaler:`` in the YAML file).

    An unknown key is an error, like an unknown top-level setting. The policy's knobs take their defaults
    from :class:`~orchestrator.core.autoscale.AutoscaleConfig`; :meth:`policy` builds that config.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    interval_s: float = Field(default=2.0, gt=0, le=300)
    max_gpus: float | None = Field(default=None, ge=0, description="Cap on GPUs Ripple may use.")
    max_cpus: float | None = Field(
        default=None, ge=0, description="Cap on the CPUs Ripple's replicas may hold together."
    )
    max_memory_gb: float | None = Field(
        default=None, ge=0, description="Cap on the memory (GB) Ripple's replicas may hold together."
    )
    high_load_threshold: int = Field(default=_POLICY.high_load_threshold, ge=1)
    high_load_boost: int = Field(default=_POLICY.high_load_boost, ge=0, le=100)
    starvation_step_s: float = Field(default=_POLICY.starvation_step_s, gt=0)
    starvation_boost_per_step: int = Field(default=_POLICY.starvation_boost_per_step, ge=0, le=100)
    starvation_max_boost: int = Field(default=_POLICY.starvation_max_boost, ge=0, le=100)
    starvation_reclaim_after_s: float | None = Field(
        default=None,
        ge=0,
        description="Wait of a job with no replica at all before a replica is reclaimed for it; "
        "unset: one starvation step after the boost has reached its maximum.",
    )
    preempt_busy: bool = _POLICY.preempt_busy

    @model_validator(mode="after")
    def _policy_accepts(self) -> AutoscalerSettings:
        self.policy()  # the policy's own checks (ValueError, reported as a setting error)
        return self

    @property
    def max_memory_mb(self) -> float | None:
        """``max_memory_gb`` in MB (the unit of endpoint specs and of the policy's snapshot)."""
        return None if self.max_memory_gb is None else self.max_memory_gb * 1024

    def policy(self) -> AutoscaleConfig:
        """The autoscaling policy's config from these settings."""
        reclaim_s = self.starvation_reclaim_after_s
        if reclaim_s is None:
            reclaim_s = default_reclaim_after_s(
                self.starvation_step_s, self.starvation_boost_per_step, self.starvation_max_boost
            )
        return AutoscaleConfig(
            high_load_threshold=self.high_load_threshold,
            high_load_boost=self.high_load_boost,
            starvation_step_s=self.starvation_step_s,
            starvation_boost_per_step=self.starvation_boost_per_step,
            starvation_max_boost=self.starvation_max_boost,
            preempt_busy=self.preempt_busy,
            starvation_reclaim_after_s=reclaim_s,
        )


def mask_url(url: str | None) -> str | None:
    """A URL with its password (and user name) replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = "***@" + host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
"""The URL forms of ``redis_url`` (``redis.Redis.from_url``)."""


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
    max_package_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1024,
        le=512 * 1024 * 1024,
        description="Largest code package `ripple deploy` may upload (POST /api/v1/packages).",
    )
    keep_versions: int = Field(
        default=DEFAULT_KEEP_VERSIONS,
        ge=1,
        le=1000,
        description="How many of each endpoint's latest versions keep their code package for a rollback; "
        "older versions' packages are deleted (the version serving and one rolling out always keep theirs).",
    )
    package_grace_s: float = Field(
        default=UNREFERENCED_GRACE_S,
        ge=0,
        description="How long an uploaded code package no version names yet is kept (a deploy in progress).",
    )
    keep_results_s: float = Field(
        default=DEFAULT_KEEP_RESULTS_S,
        ge=0,
        le=30 * 86_400,
        description="How long a finished job (its status, output, error, history and stream) is kept after "
        "it ended, then deleted from the store; 0 keeps every job for ever (the store's memory grows "
        "without end).",
    )
    store_retry_s: float = Field(
        default=RETRY_WHILE_RESTARTING_S,
        ge=0,
        le=3600,
        description="How long a store command is tried again while Redis does not answer (a restart, a "
        "failover) before it fails: a submit then answers 503; a replica keeps its finished results and "
        "its takes and tries them again for as long as the outage lasts. Fit it to your Redis's failover.",
    )
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    lease_grace_s: float = Field(default=30.0, gt=0, description="Unreported lease age before reclaim.")
    take_wait_s: float = Field(default=20.0, ge=0, le=60, description="Long-poll hold of job-take.")
    stop_wait_s: float = Field(default=20.0, ge=0, le=60, description="Long-poll hold of job-stop.")
    runsync_wait_s: float = Field(default=90.0, ge=0, le=300)
    sweep_interval_s: float = Field(default=0.5, gt=0, le=60)
    webhook_max_attempts: int = Field(default=5, ge=1, le=20)
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, '*.domain's and CIDRs webhooks may target though not public (comma-separated).",
    )
    drain_timeout_s: float = Field(default=600.0, gt=0, description="Longest a draining worker may take.")
    ready_timeout_s: float = Field(
        default=DEFAULT_READY_TIMEOUT_S,
        gt=0,
        le=86_400,
        description="Longest a new version's replica may load (placed, not ready) before the rollout counts "
        "it as a failed start and goes back to the stable version.",
    )
    serve_replicas: int = Field(default=1, ge=1, le=64)
    direct_ingress_port: int | None = Field(
        default=None,
        ge=1024,
        le=65_535 - 64,
        description="With `ripple up` starting the Ray head: each API replica also serves the API on a port "
        "of its own from this one up, without Serve's HTTP proxy on the path (Ray Serve's direct ingress, "
        "experimental in Ray 2.60); the proxy still serves RIPPLE_PORT.",
    )
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

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES)} (redis-py's URL forms)")
        return value

    @field_validator("keep_results_s")
    @classmethod
    def _keep_results(cls, value: float) -> float:
        if 0 < value < MIN_KEEP_RESULTS_S:
            raise ValueError(
                f"must be 0 (for ever) or at least {MIN_KEEP_RESULTS_S:g} s: a finished job's webhook, "
                "and the caller that polls for its result, must still find it"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _webhook_allow_list(cls, value: Any) -> Any:
        """``RIPPLE_WEBHOOK_ALLOW`` is comma-separated (or a JSON list); YAML gives a list."""
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except ValueError:
                    raise ValueError("starts with '[' but is not a JSON list of strings") from None
            return value.split(",")
        return value

    @field_validator("webhook_allow")
    @classmethod
    def _webhook_allow_entries(cls, value: list[str]) -> list[str]:
        WebhookPolicy.parse(value)  # ValueError naming the first bad entry
        return [v.strip() for v in value if v.strip()]

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
    _check_nested_env()
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


def _nested_groups() -> dict[str, type[BaseModel]]:
    """Settings that are groups of settings (``autoscaler``), by name."""
    out: dict[str, type[BaseModel]] = {}
    for name, field in Settings.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out[name] = kind
    return out


def _check_nested_env() -> None:
    """Refuse a ``RIPPLE_<GROUP>...`` variable that does not name a setting of the group: one with a single
    ``_`` after the group (``RIPPLE_AUTOSCALER_INTERVAL_S``), which the environment source would ignore.
    Unknown names after ``__`` are refused by the group's own validation."""
    for group, model in _nested_groups().items():
        head = f"RIPPLE_{group.upper()}"
        for env in os.environ:
            name = env.upper()
            if name.startswith(head) and name != head and not name.startswith(head + "__"):
                known = ", ".join(f"{head}__{f.upper()}" for f in model.model_fields)
                raise ConfigError(
                    f"unknown setting {env}: settings of {group} are spelled {head}__NAME (known: {known})",
                    [(group, env)],
                )


_NOT_SECRET = frozenset({"key_prefix"})  # names with "key" or "url" in them whose values are safe to echo


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        env = "RIPPLE_" + "__".join(str(p) for p in err["loc"]).upper()
        value = err.get("input")
        secret = name not in _NOT_SECRET and any(s in name.lower() for s in ("key", "url", "secret", "token"))
        shown = "***" if secret else repr(value)
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown setting {name} ({env}) = {shown}: {err['msg']}{_known(err['loc'])}")
        else:
            why = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"invalid setting {name} ({env}) = {shown}: {why}")
    return "; ".join(lines)


def _known(loc: tuple[int | str, ...]) -> str:
    """`` (known: ...)``: the setting names valid where an unknown one was given."""
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        group = _nested_groups().get(str(part)) if model is Settings else None
        if group is None:
            return ""
        model = group
    return " (known: " + ", ".join(model.model_fields) + ")"


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
    webhook_allow: tuple[str, ...] = ()  # Settings.webhook_allow, validated
    keep_versions: int = DEFAULT_KEEP_VERSIONS
    package_grace_s: float = UNREFERENCED_GRACE_S
    keep_results_s: float = DEFAULT_KEEP_RESULTS_S
    store_retry_s: float = RETRY_WHILE_RESTARTING_S
    packages_dir: str | None = None  # where ``ripple up`` keeps copies of code packages (deleted with them)

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
            webhook_allow=tuple(settings.webhook_allow),
            keep_versions=settings.keep_versions,
            package_grace_s=settings.package_grace_s,
            keep_results_s=settings.keep_results_s,
            store_retry_s=settings.store_retry_s,
        )
