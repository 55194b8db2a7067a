"""Which code packages are kept (``orchestrator.core.package_retention``): pure."""

from __future__ import annotations

from typing import Any

from orchestrator.core.package_retention import kept_versions, naming, package_uris, referenced, to_delete
from orchestrator.core.versions import EndpointVersion

HOUR_MS = 3_600_000


def pkg(n: int) -> str:
    return f"gcs://_ray_pkg_{n:040d}.zip"


def version(n: int, state: str = "retired", **fields: Any) -> EndpointVersion:
    env = fields.pop("runtime_env", {"working_dir": pkg(n)})
    return EndpointVersion.model_validate(
        {"version": n, "created_ms": n, "state": state, "runtime_env": env, **fields}
    )


def test_package_uris_are_the_working_dir_and_py_modules_packages_only() -> None:
    env = {
        "working_dir": pkg(1),
        "py_modules": [pkg(2), "s3://bucket/lib.zip", 7],
        "pip": ["torch"],
        "env_vars": {"working_dir": pkg(3)},
    }
    assert package_uris(env) == {pkg(1), pkg(2)}
    assert package_uris({"working_dir": "https://example.com/code.zip"}) == set()
    assert package_uris(None) == set() and package_uris({}) == set()


def test_kept_versions_are_the_latest_and_the_serving_and_rolling_out_ones() -> None:
    versions = [version(1, "active"), version(2, "failed"), version(3), version(4), version(5, "rolling_out")]
    assert [v.version for v in kept_versions(versions, 2)] == [1, 4, 5]
    assert [v.version for v in kept_versions(versions, 0)] == [1, 5], "at least the latest"
    assert [v.version for v in kept_versions(versions, 10)] == [1, 2, 3, 4, 5]


def test_to_delete_skips_referenced_and_recent_packages() -> None:
    now_ms = 10 * HOUR_MS
    a = [version(1), version(2), version(3, "active")]
    b = [version(1, "active", runtime_env={"working_dir": pkg(1), "py_modules": [pkg(7)]})]
    arrived = {pkg(n): now_ms - 2 * HOUR_MS for n in (1, 2, 3, 7, 8)} | {pkg(9): now_ms - HOUR_MS // 2}
    assert referenced({"a": a, "b": b}, 2) == {pkg(1), pkg(2), pkg(3), pkg(7)}
    assert to_delete(arrived, {"a": a, "b": b}, 1, now_ms) == [pkg(2), pkg(8)], "9 arrived 30 min ago"
    assert to_delete(arrived, {"a": a}, 1, now_ms) == [pkg(1), pkg(2), pkg(7), pkg(8)]
    assert to_delete(arrived, {}, 1, now_ms, grace_s=0) == sorted(arrived)


def test_naming_skips_versions_already_marked() -> None:
    versions = [version(1), version(2, code_deleted_ms=5), version(3)]
    assert [v.version for v in naming(versions, {pkg(1), pkg(2)})] == [1]
