"""Request and resource models of the public API, validated once at the edge.

Field names on the wire are camelCase as in the contract; Python attributes are snake_case with units.
Every model forbids unknown fields where a typo would silently change behaviour (endpoint specs), and
ignores them where RunPod clients send extras we do not use (``s3Config`` on a run request).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

from orchestrator.core.gpu_types import MAX_GPU_TYPES, validate_gpu_types
from orchestrator.core.net_policy import parse_webhook_url

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
HANDLER_REF = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?\Z")

DEFAULT_EXECUTION_TIMEOUT_MS = 600_000
DEFAULT_TTL_MS = 86_400_000
MAX_TIMEOUT_MS = 7 * 86_400_000


STORED = "stored"
"""Validation context key: ``{STORED: True}`` loads a spec read back from the store (trusted input)."""
CODE_FIELDS = ("working_dir", "py_modules")
"""runtime_env fields that carry code: a remote URI each, never a local path."""
REMOTE_SCHEMES = ("gcs", "s3", "gs", "https", "http", "azure", "abfss")
"""URI schemes a Ray worker fetches by itself (``gcs://`` is a package in the Ray cluster's GCS)."""
DEPLOY_HINT = "use `ripple deploy PATH --endpoint NAME` to upload a folder"


def _code_uri_problem(field: str, value: Any) -> str | None:
    """Why ``value`` cannot be the ``field`` code URI of an API-created runtime env (None when fine)."""
    if not isinstance(value, str):
        return f"runtimeEnv.{field}: must be a URI string, got {type(value).__name__}"
    scheme, sep, rest = value.partition("://")
    if not sep:
        return (
            f"runtimeEnv.{field}: {value!r} is a local path, which the replicas' nodes do not have; "
            f"{DEPLOY_HINT}, or give a remote URI (gcs://, s3://, gs://, https://...zip)"
        )
    if scheme.lower() not in REMOTE_SCHEMES:
        return (
            f"runtimeEnv.{field}: {value!r}: the scheme {scheme!r} is not one replicas can fetch "
            f"({', '.join(s + '://' for s in REMOTE_SCHEMES)}); {DEPLOY_HINT}"
        )
    path = rest.split("?", 1)[0].lower()
    allowed = (".zip", ".whl") if field == "py_modules" else (".zip",)
    if not path.endswith(allowed):
        return f"runtimeEnv.{field}: {value!r}: a remote package must be a {' or '.join(allowed)} file"
    return None


def validate_runtime_env(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """A runtime env given to the API: ``working_dir`` and each ``py_modules`` entry must be a remote URI
    (a local path exists only on the caller's machine: it is refused, naming ``runtimeEnv.working_dir``
    and pointing at ``ripple deploy``). Other keys (``pip``, ``env_vars``, ...) are left to Ray.
    Raises ValueError."""
    if value is None:
        return None
    if "working_dir" in value:
        problem = _code_uri_problem("working_dir", value["working_dir"])
        if problem:
            raise ValueError(problem)
    if "py_modules" in value:
        modules = value["py_modules"]
        if not isinstance(modules, list):
            raise ValueError("runtimeEnv.py_modules: must be a list of URIs")
        for item in modules:
            problem = _code_uri_problem("py_modules", item)
            if problem:
                raise ValueError(problem)
    return value


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The JSON form with camelCase keys, as the API returns it."""
        return self.model_dump(mode="json", by_alias=True)


class EndpointSpec(_Wire):
    """An endpoint: where jobs are sent, how its workers are placed, and how its pool scales.

    ``handler`` is ``"module:function"`` or ``"module"`` (a RunPod worker file: the config it passes to
    ``runpod.serverless.start``, or its ``handler`` function; see ``core.handlers``) run by Ray worker
    actors; ``None`` means outside workers only.
    Times follow the contract's units: ``scale*`` fields in seconds, ``executionTimeout``/``ttl`` in ms.
    """

    name: str = Field(description="DNS-1123 label: lowercase letters, digits and '-', at most 63.")
    handler: str | None = Field(
        default=None,
        description="'module:function' or 'module' (a RunPod worker file), or null for outside workers.",
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None,
        description="A Ray runtime_env for replicas; code as a remote URI (see `ripple deploy`), not a path.",
    )
    gpus: float = Field(default=1.0, ge=0, le=64, description="GPUs per replica (fractions allowed).")
    gpu_types: list[str] | None = Field(
        default=None,
        description=f"GPU types by preference (['H100', 'A100']), at most {MAX_GPU_TYPES}; null: any.",
    )
    code_digest: str | None = Field(
        default=None,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Digest of the code package (set by `ripple deploy`); a change creates a version.",
    )
    version: int = Field(
        default=0,
        ge=0,
        description="The endpoint's latest version (what its pool runs); set by Ripple, ignored on input.",
    )
    cpus: float = Field(default=0.25, ge=0, le=256, description="CPUs per replica.")
    memory_mb: int | None = Field(default=None, ge=1, le=4_194_304, description="Memory per replica, MiB.")
    concurrency: int = Field(default=1, ge=1, le=1000, description="Jobs at once per worker.")
    min_replicas: int = Field(default=0, ge=0, le=1000)
    max_replicas: int = Field(default=10, ge=0, le=1000)
    scale_up_threshold: int = Field(default=1, ge=1, le=1_000_000, description="Queued jobs that scale up.")
    scale_down_idle_time: float = Field(default=300, ge=0, le=604_800, description="Seconds idle, then down.")
    scale_up_cooldown: float = Field(default=30, ge=0, le=86_400, description="Seconds between scale-ups.")
    scale_down_cooldown: float = Field(
        default=60, ge=0, le=86_400, description="Seconds between scale-downs."
    )
    priority: int = Field(default=50, ge=0, le=100)
    execution_timeout: int = Field(default=DEFAULT_EXECUTION_TIMEOUT_MS, ge=1000, le=MAX_TIMEOUT_MS)
    ttl: int = Field(default=DEFAULT_TTL_MS, ge=1000, le=MAX_TIMEOUT_MS * 4)
    max_retries: int = Field(default=3, ge=0, le=100)
    max_queue_size: int | None = Field(default=None, ge=1, le=100_000_000)
    keep_alive: Literal["fixed", "learned"] = Field(
        default="fixed",
        description="'fixed' scales down after scaleDownIdleTime; 'learned' follows arrivals.",
    )

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS1123_LABEL.match(value):
            raise ValueError(
                f"{value!r} is not a DNS-1123 label (lowercase letters, digits and '-', "
                "starting and ending with a letter or digit, at most 63 characters)"
            )
        return value

    @field_validator("handler")
    @classmethod
    def _handler_ref(cls, value: str | None) -> str | None:
        if value is not None and not HANDLER_REF.match(value):
            raise ValueError(
                f"{value!r} is not of the form 'module' or 'module:function' (dotted Python names, "
                "e.g. 'handler', 'src.handler' or 'src.handler:run')"
            )
        return value

    @field_validator("gpu_types")
    @classmethod
    def _gpu_types(cls, value: list[str] | None) -> list[str] | None:
        return validate_gpu_types(value)

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env(cls, value: dict[str, Any] | None, info: ValidationInfo) -> dict[str, Any] | None:
        if isinstance(info.context, dict) and info.context.get(STORED):
            return value  # written before local paths were refused: load it, do not break recovery
        return validate_runtime_env(value)

    @model_validator(mode="after")
    def _bounds(self) -> EndpointSpec:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"maxReplicas ({self.max_replicas}) must be greater than or equal to "
                f"minReplicas ({self.min_replicas})"
            )
        return self


class EndpointPatch(_Wire):
    """A partial update of an endpoint: every field optional, the name immutable."""

    handler: str | None = None
    runtime_env: dict[str, Any] | None = None
    gpus: float | None = None
    gpu_types: list[str] | None = None
    code_digest: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    concurrency: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    scale_up_threshold: int | None = None
    scale_down_idle_time: float | None = None
    scale_up_cooldown: float | None = None
    scale_down_cooldown: float | None = None
    priority: int | None = None
    execution_timeout: int | None = None
    ttl: int | None = None
    max_retries: int | None = None
    max_queue_size: int | None = None
    keep_alive: Literal["fixed", "learned"] | None = None

    @field_validator("runtime_env")
    @classmethod
    def _runtime_env(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return validate_runtime_env(value)

    def apply(self, spec: EndpointSpec) -> EndpointSpec:
        """Return ``spec`` with the fields this patch sets, validated as a whole (raises ValidationError).
        ``version`` is not a patch field: the dispatcher sets it."""
        merged = spec.model_dump(by_alias=True)  # by the wire names, which its errors then name too
        merged.update(self.model_dump(by_alias=True, exclude_unset=True))
        return EndpointSpec.model_validate(merged)


class JobPolicy(BaseModel):
    """RunPod's per-job ``policy`` object (milliseconds)."""

    model_config = ConfigDict(extra="ignore")

    execution_timeout: Annotated[int | None, Field(alias="executionTimeout", ge=1000, le=MAX_TIMEOUT_MS)] = (
        None
    )
    ttl: Annotated[int | None, Field(ge=1000, le=MAX_TIMEOUT_MS * 4)] = None
    low_priority: Annotated[bool, Field(alias="lowPriority")] = False


class RunRequest(BaseModel):
    """Body of ``/run`` and ``/runsync``: ``input`` is required; ``webhook`` and ``policy`` optional.

    Extra top-level keys the RunPod SDK may send (``s3Config``) are accepted and ignored.

    ``webhook`` must be an http(s) URL with a host and a valid port (``parse_webhook_url``). Where it may
    point is the instance's policy (``webhook_allow``), checked where that is known: the queue refuses
    literal non-public addresses and loopback names for every caller
    (:func:`orchestrator.core.net_policy.check_literal_webhooks`), the HTTP edge resolves names too
    (:func:`orchestrator.webhooks.check_webhook_target`), and delivery checks again.
    """

    model_config = ConfigDict(extra="ignore")

    input: Any = Field(description="The job's input, passed to the handler as job['input'].")
    webhook: Annotated[str | None, Field(max_length=2048, pattern=r"^https?://")] = None
    policy: JobPolicy | None = None

    @field_validator("input")
    @classmethod
    def _present(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("input is required and must not be null")
        return value

    @field_validator("webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_webhook_url(value)  # ValueError saying what is wrong with it
        return value


class BatchRunRequest(BaseModel):
    """Body of ``/run-batch``: up to 10,000 jobs accepted all or nothing."""

    model_config = ConfigDict(extra="forbid")

    jobs: list[RunRequest] = Field(min_length=1, max_length=10_000)


@dataclass(frozen=True)
class NewJob:
    """A validated job about to be written to the store."""

    id: str
    endpoint: str
    input_json: str
    execution_timeout_ms: int
    ttl_ms: int
    max_retries: int
    low_priority: bool = False
    webhook: str | None = None


def new_job_id() -> str:
    """A fresh job id (a UUID4 string, as RunPod-style clients expect an opaque string)."""
    return str(uuid.uuid4())


def worker_id_ok(worker_id: str) -> bool:
    """Worker ids come from outside (``RUNPOD_POD_ID``): keep them short and printable."""
    return 0 < len(worker_id) <= 128 and worker_id.isprintable() and "/" not in worker_id
