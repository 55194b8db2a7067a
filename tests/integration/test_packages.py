"""Code packages in a real local Ray's GCS (``actors.packages``): stored once by content, a copy kept where
``ripple up`` keeps them, and put back from that copy into a GCS that lost them (a new Ray head)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from ray._private.runtime_env.packaging import package_exists
from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

from actors.packages import restore_packages, store_package
from tests.integration.ray_fixtures import local_ray

__all__ = ["local_ray"]

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("local_ray")]

RAY_INIT = {"num_cpus": 1, "num_gpus": 0}


def _zip(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", text)
    return buf.getvalue()


def test_kept_packages_are_restored_to_a_gcs_that_lost_them(tmp_path: Path) -> None:
    keep = tmp_path / "packages"
    data = _zip("def handler(job):\n    return 1\n")
    first = store_package(data, 1 << 20, keep)
    assert not first["existed"] and package_exists(first["uri"])
    kept = keep / first["uri"].removeprefix("gcs://")
    assert kept.read_bytes() == data
    assert store_package(data, 1 << 20, keep)["existed"], "the same bytes: stored once"

    other = store_package(_zip("def handler(job):\n    return 2\n"), 1 << 20, keep)
    forged = keep / other["uri"].removeprefix("gcs://")
    forged.write_bytes(data)  # a kept file that no longer matches its name is not put back
    for uri in (first["uri"], other["uri"]):
        _internal_kv_del(uri)  # as a new Ray head has none of them
        assert not package_exists(uri)

    assert restore_packages(keep) == [first["uri"]]
    assert package_exists(first["uri"]) and _internal_kv_get(first["uri"]) == data
    assert not package_exists(other["uri"])
    assert restore_packages(keep) == [], "already there: nothing to put back"
    assert restore_packages(tmp_path / "none") == [], "no copies kept: nothing to do"
