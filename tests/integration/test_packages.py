"""Code packages in a real local Ray's GCS (``actors.packages``): stored once by content, a copy kept where
``ripple up`` keeps them, put back from that copy into a GCS that lost them (a new Ray head), and deleted
from both once no kept version runs them."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from ray._private.runtime_env.packaging import package_exists
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

from actors.packages import GcsPackageShelf, put_package, restore_packages
from orchestrator.core.models import EndpointPatch
from orchestrator.core.packages import inspect_package, package_uri
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, ep, make
from tests.integration.ray_fixtures import local_ray

__all__ = ["local_ray"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("local_ray")]

RAY_INIT = {"num_cpus": 1, "num_gpus": 0}


def store_package(data: bytes, keep: Path) -> tuple[str, bool]:
    """As the upload route stores a package: checked, then put; its URI and whether the GCS had it."""
    info = inspect_package(data, 1 << 20)
    return info.uri, put_package(data, info, keep)


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", text)
    return buf.getvalue()


def test_kept_packages_are_restored_to_a_gcs_that_lost_them(tmp_path: Path) -> None:
    keep = tmp_path / "packages"
    data = _zip("def handler(job):\n    return 1\n")
    first, existed = store_package(data, keep)
    assert not existed and package_exists(first)
    kept = keep / first.removeprefix("gcs://")
    assert kept.read_bytes() == data
    assert store_package(data, keep) == (first, True), "the same bytes: stored once"

    other, _ = store_package(_zip("def handler(job):\n    return 2\n"), keep)
    forged = keep / other.removeprefix("gcs://")
    forged.write_bytes(data)  # a kept file that no longer matches its name is not put back
    for uri in (first, other):
        _internal_kv_del(uri)  # as a new Ray head has none of them
        assert not package_exists(uri)

    assert restore_packages(keep) == [first]
    assert package_exists(first) and _internal_kv_get(first) == data
    assert not package_exists(other)
    assert restore_packages(keep) == [], "already there: nothing to put back"
    assert restore_packages(tmp_path / "none") == [], "no copies kept: nothing to do"


async def test_the_queue_deletes_packages_no_kept_version_runs_from_the_gcs_and_the_kept_copies(
    tmp_path: Path, redis_store: RedisStore
) -> None:
    """The dispatcher on the real store prunes through the real shelf: past ``keep_versions`` (2 here)
    and the hour's grace, a version's package leaves Ray's GCS and ``ripple up``'s copies, so a new head
    does not get it back; the kept versions' packages stay."""
    keep = tmp_path / "packages"
    clock = FakeClock()
    d = make(redis_store, clock, Recorder(), GcsPackageShelf(keep))
    uris = []
    for n in range(1, 5):
        data = _zip(f"def handler(job):\n    return {n * 10}  # pruned\n")
        uri = package_uri(data)
        await d.package_arriving(uri)
        assert store_package(data, keep) == (uri, False)
        uris.append(uri)
        patch = {"runtimeEnv": {"working_dir": uri}, "codeDigest": f"sha256:{n}"}
        if n == 1:
            got = await d.create_endpoint(ep(handler="handler:handler", **patch))
        else:
            got = await d.update_endpoint("ep", EndpointPatch.model_validate(patch))
        await d.report_version_state("ep", got["version"], "active")
        if n == 3:
            clock.advance(3601)  # 1-3 arrived over an hour before 4's version
    kept = sorted(p.name for p in keep.iterdir())
    assert kept == sorted(u.removeprefix("gcs://") for u in uris[2:])
    assert [package_exists(u) for u in uris] == [False, False, True, True]
    for uri in uris[2:]:
        _internal_kv_del(uri)  # a new Ray head
    assert sorted(restore_packages(keep)) == sorted(uris[2:]), "only the kept versions' packages return"
    versions = (await d.list_versions("ep"))["versions"]
    assert [v["codeDeletedAt"] is not None for v in versions] == [False, False, True, True]  # 4, 3, 2, 1
    assert GcsPackageShelf(keep).delete(uris[0]), "already gone: nothing to do"
