"""API models: endpoint defaults from the contract, every bound, names, handler refs, patches, run bodies."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.core.models import (
    BatchRunRequest,
    EndpointPatch,
    EndpointSpec,
    JobPolicy,
    RunRequest,
    new_job_id,
    worker_id_ok,
)

pytestmark = pytest.mark.timeout(60)

CONTRACT_DEFAULTS = {
    "handler": None,
    "runtimeEnv": None,
    "minReplicas": 0,
    "maxReplicas": 10,
    "scaleUpThreshold": 1,
    "scaleDownIdleTime": 300,
    "scaleUpCooldown": 30,
    "scaleDownCooldown": 60,
    "priority": 50,
    "executionTimeout": 600_000,
    "ttl": 86_400_000,
    "maxRetries": 3,
    "maxQueueSize": None,
    "concurrency": 1,
    "keepAlive": "fixed",
}

# (field, lowest accepted, highest accepted): one below and one above must be refused.
BOUNDS: list[tuple[str, float, float]] = [
    ("gpus", 0, 64),
    ("cpus", 0, 256),
    ("memoryMb", 1, 4_194_304),
    ("concurrency", 1, 1000),
    ("minReplicas", 0, 1000),
    ("maxReplicas", 0, 1000),
    ("scaleUpThreshold", 1, 1_000_000),
    ("scaleDownIdleTime", 0, 604_800),
    ("scaleUpCooldown", 0, 86_400),
    ("scaleDownCooldown", 0, 86_400),
    ("priority", 0, 100),
    ("executionTimeout", 1000, 7 * 86_400_000),
    ("ttl", 1000, 28 * 86_400_000),
    ("maxRetries", 0, 100),
    ("maxQueueSize", 1, 100_000_000),
]


def spec(**fields: Any) -> EndpointSpec:
    return EndpointSpec.model_validate({"name": "echo", **fields})


def test_defaults_match_the_contract() -> None:
    wire = spec().wire()
    for name, value in CONTRACT_DEFAULTS.items():
        assert wire[name] == value, name
    assert wire["name"] == "echo"
    assert wire["gpus"] == 1.0 and wire["memoryMb"] is None


def test_wire_is_camel_case_and_round_trips() -> None:
    s = spec(minReplicas=1, maxReplicas=4, handler="pkg.mod:run", runtimeEnv={"pip": ["x"]})
    wire = s.wire()
    assert "min_replicas" not in wire and wire["minReplicas"] == 1
    assert EndpointSpec.model_validate(wire) == s
    assert EndpointSpec.model_validate_json(s.model_dump_json()) == s, "stored form (snake_case) reloads"


@pytest.mark.parametrize(("field", "low", "high"), BOUNDS, ids=[b[0] for b in BOUNDS])
def test_bounds(field: str, low: float, high: float) -> None:
    extra = {"maxReplicas": 1000} if field == "minReplicas" else {}
    assert spec(**{field: low, **extra}).wire()[field] == low
    if field == "maxReplicas":
        extra = {"minReplicas": 0}
    assert spec(**{field: high, **extra}).wire()[field] == high
    for bad in (low - 1, high + 1):
        with pytest.raises(ValidationError) as info:
            spec(**{field: bad, **extra})
        assert any(field in e["loc"] for e in info.value.errors()), info.value


@pytest.mark.parametrize("name", ["a", "echo", "my-model-2", "0abc", "a" * 63, "x1-y2-z3"])
def test_dns_1123_names_accepted(name: str) -> None:
    assert EndpointSpec(name=name).name == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "Echo", "a_b", "a.b", "a" * 64, "é", "a b", "echo\n"])
def test_dns_1123_names_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        EndpointSpec(name=name)
    assert "DNS-1123" in str(info.value)


@pytest.mark.parametrize(
    "ref", ["mod:fn", "pkg.sub.mod:handler", "_m:_f", "m1.m2:F9", "handler", "src.handler", "mod.fn"]
)
def test_handler_refs_accepted(ref: str) -> None:
    assert spec(handler=ref).handler == ref


@pytest.mark.parametrize(
    "ref",
    ["mod:", ":fn", "mod:fn:x", "1mod:fn", "mod:fn()", "a/b:fn", "mod:fn\n", "a..b", "src.", ".mod", "a b"],
)
def test_handler_refs_refused(ref: str) -> None:
    with pytest.raises(ValidationError, match="'module' or 'module:function'"):
        spec(handler=ref)


def test_min_above_max_names_both_values() -> None:
    with pytest.raises(ValidationError) as info:
        spec(minReplicas=5, maxReplicas=3)
    assert "maxReplicas (3) must be greater than or equal to minReplicas (5)" in str(info.value)
    assert spec(minReplicas=3, maxReplicas=3).min_replicas == 3


@pytest.mark.parametrize("extra", [{"maxReplica": 3}, {"gpu": 1}, {"unknown": None}])
def test_unknown_endpoint_fields_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=r"[Ee]xtra"):
        spec(**extra)


def test_keep_alive_values() -> None:
    assert spec(keepAlive="learned").keep_alive == "learned"
    with pytest.raises(ValidationError):
        spec(keepAlive="forever")


def test_patch_applies_only_the_fields_it_sets() -> None:
    base = spec(minReplicas=1, maxReplicas=5, priority=70, maxQueueSize=100)
    updated = EndpointPatch.model_validate({"maxReplicas": 8, "maxQueueSize": None}).apply(base)
    assert updated.max_replicas == 8 and updated.max_queue_size is None
    assert (updated.min_replicas, updated.priority, updated.name) == (1, 70, "echo")
    assert base.max_replicas == 5, "the original is untouched"
    assert EndpointPatch().apply(base) == base


def test_patch_is_validated_as_a_whole() -> None:
    base = spec(minReplicas=2, maxReplicas=5)
    with pytest.raises(ValidationError, match=r"maxReplicas \(1\).*minReplicas \(2\)"):
        EndpointPatch.model_validate({"maxReplicas": 1}).apply(base)
    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({"priority": 101}).apply(base)
    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({"handler": "no pe"}).apply(base)


def test_patch_cannot_rename_or_add_fields() -> None:
    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({"name": "other"})
    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({"replicas": 3})


# Run requests -------------------------------------------------------------------------------------


def test_run_request_minimal_and_full() -> None:
    r = RunRequest.model_validate({"input": {"x": 1}})
    assert r.input == {"x": 1} and r.webhook is None and r.policy is None
    full = RunRequest.model_validate(
        {
            "input": "text",
            "webhook": "https://example.test/hook",
            "policy": {"executionTimeout": 5000, "ttl": 60_000, "lowPriority": True},
            "s3Config": {"bucket": "ignored"},
        }
    )
    assert full.policy is not None
    assert (full.policy.execution_timeout, full.policy.ttl, full.policy.low_priority) == (5000, 60_000, True)


@pytest.mark.parametrize("body", [{}, {"input": None}, {"webhook": "http://x/"}])
def test_run_request_needs_input(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="input"):
        RunRequest.model_validate(body)


@pytest.mark.parametrize("falsy", [0, "", [], {}, False])
def test_falsy_inputs_are_still_inputs(falsy: Any) -> None:
    assert RunRequest.model_validate({"input": falsy}).input == falsy


@pytest.mark.parametrize("hook", ["ftp://x/", "example.com/hook", "http://" + "a" * 2050])
def test_bad_webhooks_refused(hook: str) -> None:
    with pytest.raises(ValidationError, match="webhook"):
        RunRequest.model_validate({"input": 1, "webhook": hook})


@pytest.mark.parametrize(
    "policy",
    [
        {"executionTimeout": 999},
        {"executionTimeout": 7 * 86_400_000 + 1},
        {"ttl": 999},
        {"ttl": 28 * 86_400_000 + 1},
    ],
)
def test_policy_bounds(policy: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RunRequest.model_validate({"input": 1, "policy": policy})


def test_policy_defaults_and_ignores_extras() -> None:
    p = JobPolicy.model_validate({"somethingNew": 1})
    assert (p.execution_timeout, p.ttl, p.low_priority) == (None, None, False)


def test_batch_limits() -> None:
    assert len(BatchRunRequest.model_validate({"jobs": [{"input": i} for i in range(3)]}).jobs) == 3
    assert len(BatchRunRequest.model_validate({"jobs": [{"input": 1}] * 10_000}).jobs) == 10_000
    for jobs in ([], [{"input": 1}] * 10_001, [{"input": 1}, {"input": None}]):
        with pytest.raises(ValidationError):
            BatchRunRequest.model_validate({"jobs": jobs})
    with pytest.raises(ValidationError):
        BatchRunRequest.model_validate({"jobs": [{"input": 1}], "extra": True})


def test_ids() -> None:
    a, b = new_job_id(), new_job_id()
    assert a != b and uuid.UUID(a).version == 4
    assert worker_id_ok("pod-abc_1") and worker_id_ok("x" * 128)
    for bad in ("", "x" * 129, "a/b", "tab\there", "nl\n"):
        assert not worker_id_ok(bad), bad
