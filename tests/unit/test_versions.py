"""Endpoint versions (``core.versions``), the runtimeEnv code rule (``core.models``), code packages
(``core.packages``) and the endpoint problem (``core.endpoint_problem``): pure functions."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.core.endpoint_problem import endpoint_problem
from orchestrator.core.errors import Conflict, InvalidInput, NotFound
from orchestrator.core.models import EndpointPatch, EndpointSpec
from orchestrator.core.packages import inspect_package, package_uri
from orchestrator.core.versions import (
    RUNTIME_FIELDS,
    EndpointVersion,
    add_version,
    apply_version,
    next_version,
    rollback_target,
    set_state,
)


def spec(**fields: Any) -> EndpointSpec:
    return EndpointSpec.model_validate({"name": "ep", "handler": "h:f", **fields})


def test_runtime_fields_are_what_the_contract_lists() -> None:
    assert set(RUNTIME_FIELDS) == {
        "codeDigest", "handler", "runtimeEnv", "gpus", "gpuTypes", "cpus", "memoryMb", "concurrency"
    }  # fmt: skip
    wire = spec().wire()
    assert all(f in wire for f in RUNTIME_FIELDS)


def test_first_version_is_one_and_rolls_out() -> None:
    v1 = next_version(None, spec(gpus=2), [], 1234)
    assert v1 is not None
    assert (v1.version, v1.created_ms, v1.changed, v1.state, v1.gpus) == (1, 1234, (), "rolling_out", 2)
    wire = v1.wire()
    assert {"version", "createdAt", "handler", "codeDigest", "changed", "state", "error"} <= set(wire)
    assert wire["createdAt"] == 1234 and wire["changed"] == []


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"handler": "h:g"}, ("handler",)),
        ({"runtimeEnv": {"pip": ["x"]}}, ("runtimeEnv",)),
        ({"gpus": 0.5, "cpus": 2}, ("gpus", "cpus")),
        ({"gpuTypes": ["H100"]}, ("gpuTypes",)),
        ({"memoryMb": 512, "concurrency": 4}, ("memoryMb", "concurrency")),
        ({"codeDigest": "sha256:00"}, ("codeDigest",)),
    ],
)
def test_runtime_changes_make_a_version(change: dict[str, Any], changed: tuple[str, ...]) -> None:
    before = spec()
    v1 = next_version(None, before, [], 0)
    assert v1 is not None
    v2 = next_version(before, spec(**change), [v1], 10)
    assert v2 is not None and v2.version == 2 and v2.changed == changed and v2.created_ms == 10


def deployed(digest: str, **env: Any) -> EndpointSpec:
    """A spec as ``ripple deploy`` writes it: the package's URI in ``working_dir``, its digest beside."""
    return spec(codeDigest=digest, runtimeEnv={"working_dir": f"gcs://_ray_pkg_{digest[-2:]}.zip", **env})


@pytest.mark.parametrize(
    ("after", "changed"),
    [
        (deployed("sha256:02"), ("codeDigest",)),  # new code: its package URI moves with the digest
        (deployed("sha256:02", pip=["torch"]), ("codeDigest", "runtimeEnv")),
        (deployed("sha256:02", env_vars={"A": "1"}), ("codeDigest", "runtimeEnv")),
        (spec(codeDigest="sha256:01", runtimeEnv={"working_dir": "gcs://other.zip"}), ("runtimeEnv",)),
    ],
)
def test_new_code_is_listed_as_the_digest_and_the_env_only_when_more_changed(
    after: EndpointSpec, changed: tuple[str, ...]
) -> None:
    before = deployed("sha256:01")
    v1 = next_version(None, before, [], 0)
    assert v1 is not None
    v2 = next_version(before, after, [v1], 10)
    assert v2 is not None and v2.changed == changed


@pytest.mark.parametrize(
    "change",
    [
        {"minReplicas": 2},
        {"maxReplicas": 3},
        {"scaleUpThreshold": 5, "scaleDownIdleTime": 1, "scaleUpCooldown": 2, "scaleDownCooldown": 3},
        {"priority": 90},
        {"executionTimeout": 5000, "ttl": 9000, "maxRetries": 1, "keepAlive": "learned"},
    ],
)
def test_scaling_changes_apply_in_place(change: dict[str, Any]) -> None:
    before = spec()
    v1 = next_version(None, before, [], 0)
    assert v1 is not None
    assert next_version(before, spec(**change), [v1], 10) is None


def _lifecycle() -> list[EndpointVersion]:
    s1, s2 = spec(), spec(handler="h:g")
    v1 = next_version(None, s1, [], 0)
    assert v1 is not None
    vs = set_state([v1], 1, "active", None, 5)
    v2 = next_version(s1, s2, vs, 10)
    assert v2 is not None
    return add_version(vs, v2)


def test_active_retires_the_previous_active_and_records_when() -> None:
    vs = set_state(_lifecycle(), 2, "active", None, 20)
    assert [(v.version, v.state, v.activated_ms) for v in vs] == [(1, "retired", 5), (2, "active", 20)]


def test_new_version_supersedes_one_still_rolling_out() -> None:
    vs = _lifecycle()
    v3 = next_version(spec(handler="h:g"), spec(handler="h:k"), vs, 30)
    assert v3 is not None and v3.version == 3
    states = [(v.version, v.state) for v in add_version(vs, v3)]
    assert states == [(1, "active"), (2, "retired"), (3, "rolling_out")]


def test_failed_keeps_the_error_and_the_lifecycle_is_one_way() -> None:
    vs = set_state(_lifecycle(), 2, "failed", "ImportError: x" * 1000, 20)
    v2 = vs[1]
    assert v2.state == "failed" and v2.error is not None and v2.error.startswith("ImportError")
    assert len(v2.error) == 4000
    assert vs[0].state == "active", "the old version keeps serving"
    assert set_state(vs, 2, "failed", "again", 21) == vs, "a repeated report is a no-op"
    with pytest.raises(Conflict):
        set_state(vs, 2, "active", None, 22)
    retired = set_state(set_state(_lifecycle(), 2, "active", None, 20), 1, "retired", None, 21)
    with pytest.raises(Conflict):
        set_state(retired, 1, "active", None, 22)
    with pytest.raises(NotFound):
        set_state(vs, 7, "active", None, 22)


def test_versions_are_immutable() -> None:
    (v1, _) = _lifecycle()
    with pytest.raises(ValidationError):
        v1.state = "failed"  # type: ignore[misc]


def test_rollback_target_defaults() -> None:
    vs = _lifecycle()  # v1 active, v2 rolling out
    assert rollback_target(vs, None).version == 1, "an unfinished rollout goes back to what serves"
    vs = set_state(vs, 2, "active", None, 20)
    assert rollback_target(vs, None).version == 1, "the version active before the current one"
    assert rollback_target(vs, 2).version == 2
    with pytest.raises(NotFound):
        rollback_target(vs, 9)
    (first,) = vs[:1]
    with pytest.raises(Conflict) as info:
        rollback_target([first.model_copy(update={"state": "active"})], None)
    assert str(info.value) == "no earlier version was ever active to roll back to", "no --to advice for one"


def test_apply_version_keeps_scaling_fields() -> None:
    (v1, _) = _lifecycle()
    now = spec(handler="h:g", minReplicas=2, gpuTypes=["A100"])
    back = apply_version(now, v1)
    assert back.handler == "h:f" and back.min_replicas == 2 and back.gpu_types is None


# runtimeEnv: code only as remote URIs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"working_dir": "/home/me/worker"}, "runtimeEnv.working_dir"),
        ({"working_dir": "."}, "runtimeEnv.working_dir"),
        ({"working_dir": "C:\\code"}, "runtimeEnv.working_dir"),
        ({"working_dir": "file:///tmp/x.zip"}, "runtimeEnv.working_dir"),
        ({"working_dir": "https://example.com/code"}, "runtimeEnv.working_dir"),
        ({"working_dir": 3}, "runtimeEnv.working_dir"),
        ({"py_modules": ["./mylib"]}, "runtimeEnv.py_modules"),
        ({"py_modules": "s3://b/m.zip"}, "runtimeEnv.py_modules"),
    ],
)
def test_local_code_paths_are_refused_naming_the_field(env: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(runtimeEnv=env)
    (err,) = info.value.errors()
    assert err["loc"] == ("runtimeEnv",) and field in err["msg"]
    with pytest.raises(ValidationError) as patch_info:
        EndpointPatch.model_validate({"runtimeEnv": env})
    assert field in str(patch_info.value)
    if isinstance(env.get("working_dir"), str) and "://" not in env["working_dir"]:
        assert "ripple deploy" in err["msg"]


@pytest.mark.parametrize(
    "env",
    [
        {"working_dir": "gcs://_ray_pkg_" + "a" * 40 + ".zip"},
        {"working_dir": "s3://bucket/code.zip"},
        {"working_dir": "gs://bucket/code.zip"},
        {"working_dir": "https://example.com/code.zip?token=1"},
        {"py_modules": ["s3://bucket/lib.whl", "https://x.org/m.zip"]},
        {"pip": ["requests==2.32.0"], "env_vars": {"A": "1"}},
        {"pip": {"packages": ["x"]}},
    ],
)
def test_remote_uris_and_pip_are_accepted(env: dict[str, Any]) -> None:
    assert spec(runtimeEnv=env).runtime_env == env


def test_version_field_is_not_patchable() -> None:
    with pytest.raises(ValidationError):
        EndpointPatch.model_validate({"version": 3})


# Packages --------------------------------------------------------------------------------------------------


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def test_package_is_content_addressed_like_ray() -> None:
    data = zip_of({"handler.py": "def handler(job): return 1\n"})
    info = inspect_package(data, 10_000)
    assert (
        info.uri == package_uri(data) and info.uri.startswith("gcs://_ray_pkg_") and info.uri.endswith(".zip")
    )
    assert info.digest.startswith("sha256:") and info.files == 1 and info.requirements is None
    assert inspect_package(data, 10_000) == info
    other = inspect_package(zip_of({"handler.py": "def handler(job): return 2\n"}), 10_000)
    assert other.uri != info.uri and other.digest != info.digest


def test_package_requirements_are_read() -> None:
    data = zip_of({"h.py": "", "requirements.txt": "# deps\nsix==1.16.0\n\nhumanize  # inline\n"})
    assert inspect_package(data, 10_000).requirements == ("six==1.16.0", "humanize")
    with pytest.raises(InvalidInput, match="options are not supported"):
        inspect_package(zip_of({"requirements.txt": "-r other.txt\n"}), 10_000)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"not a zip at all", "not a zip"),
        (zip_of({"../evil.py": "x"}), "outside its root"),
        (zip_of({"/etc/passwd": "x"}), "outside its root"),
        (zip_of({"big.bin": "x" * 5000}), "over the limit"),
    ],
)
def test_bad_packages_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message) as info:
        inspect_package(data, 1000 if message == "over the limit" else 100_000)
    assert info.value.status_code == 422


# Endpoint problem ------------------------------------------------------------------------------------------


def test_no_problem_for_a_healthy_or_idle_endpoint() -> None:
    assert endpoint_problem([], [], None, 100.0) is None
    ready = {"workerId": "a", "state": "idle", "firstSeenAt": 1000}
    assert endpoint_problem([ready], [], None, 100.0) is None


def test_failed_start_is_a_problem_until_a_later_replica_is_ready() -> None:
    failed = {
        "workerId": "a",
        "state": "stopped",
        "reason": "failed to start: RuntimeEnvSetupError: pip failed",
        "firstSeenAt": 1000,
        "error": "trace",
    }
    problem = endpoint_problem([failed], [], None, 100.0)
    assert problem is not None and problem["code"] == "start_failed"
    assert "RuntimeEnvSetupError" in problem["message"] and problem["detail"] == "trace"
    older_ready = {"workerId": "b", "state": "busy", "firstSeenAt": 500}
    assert endpoint_problem([failed, older_ready], [], None, 100.0) is not None
    later_ready = {"workerId": "c", "state": "stopped", "firstSeenAt": 2000, "history": [{"to": "idle"}]}
    assert endpoint_problem([failed, later_ready], [], None, 100.0) is None


def test_pool_error_and_unplaceable() -> None:
    problem = endpoint_problem([], [], ("bad runtime_env", 90.0), 100.0)
    assert problem is not None and problem["code"] == "pool_error"
    assert endpoint_problem([], [], ("bad runtime_env", 50.0), 100.0) is None, "expired"
    waiting = {"workerId": "a", "state": "starting", "pendingPlacement": True, "firstSeenAt": 10_000}
    problem = endpoint_problem([waiting], [], None, 100.0)
    assert problem is not None and problem["code"] == "unplaceable" and "90 s" in problem["message"]
    assert endpoint_problem([waiting], [], None, 30.0) is None, "not waiting long yet"
