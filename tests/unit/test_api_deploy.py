"""The deploy surface of the HTTP app on fakes (no Ray): local code paths refused with 422, code package
uploads (``POST /api/v1/packages``) and their own body limit."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from api_fakes import Harness, boot, harness

from orchestrator.core.packages import PackageInfo, inspect_package


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


class FakePackageStore:
    """``AppState.store_package`` without Ray: remembers URIs; checks that the queue was told of each
    package before it is stored (so a prune never deletes it under the upload)."""

    def __init__(self, queue_calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self.stored: dict[str, bytes] = {}
        self.queue_calls = queue_calls

    def __call__(self, data: bytes, info: PackageInfo) -> bool:
        assert info == inspect_package(data, 1 << 30)
        assert self.queue_calls[-1] == ("package_arriving", (info.uri,)), "the queue is told first"
        existed = info.uri in self.stored
        self.stored[info.uri] = data
        return existed


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    cfg = replace(boot(str(tmp_path), max_body_bytes=2048), max_package_bytes=64 * 1024)
    rig = harness(cfg)
    rig.state.store_package = FakePackageStore(rig.queue.calls)
    return rig


@pytest.mark.parametrize(
    ("env", "field"),
    [({"working_dir": "/home/me/worker"}, "working_dir"), ({"py_modules": ["./lib"]}, "py_modules")],
)
def test_local_code_path_is_422_naming_the_field(h: Harness, env: dict[str, Any], field: str) -> None:
    r = h.api.post("/api/v1/endpoints", json={"name": "ep", "handler": "h:f", "runtimeEnv": env})
    assert r.status_code == 422, r.text
    assert f"runtimeEnv.{field}" in r.text and "ripple deploy" in r.text
    assert not any(c[0] == "create_endpoint" for c in h.queue.calls), "nothing reached the queue"


def test_remote_working_dir_is_accepted(h: Harness) -> None:
    uri = "gcs://_ray_pkg_" + "a" * 40 + ".zip"
    body = {"name": "ep", "handler": "h:f", "runtimeEnv": {"working_dir": uri, "pip": ["six"]}}
    r = h.api.post("/api/v1/endpoints", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["runtimeEnv"] == {"working_dir": uri, "pip": ["six"]}


def test_package_upload_stores_once_and_reads_requirements(h: Harness) -> None:
    data = zip_of({"handler.py": "def handler(job):\n    return 1\n", "requirements.txt": "six\n"})
    r = h.api.post("/api/v1/packages", content=data, headers={"Content-Type": "application/zip"})
    assert r.status_code == 201, r.text
    got = r.json()
    assert got["uri"].startswith("gcs://_ray_pkg_") and got["codeDigest"].startswith("sha256:")
    assert got["requirements"] == ["six"] and got["files"] == 2 and got["existed"] is False
    again = h.api.post("/api/v1/packages", content=data).json()
    assert again["uri"] == got["uri"] and again["existed"] is True, "same content, same URI"


def test_package_route_has_its_own_body_limit(h: Harness) -> None:
    big = zip_of({"weights.txt": "".join(f"{i:08d}" for i in range(1000))})  # ~8 KB, stored
    assert len(big) > 2048
    r = h.api.post("/api/v1/packages", content=big)
    assert r.status_code == 201, "over the JSON body limit, within the package limit"
    r = h.api.post("/api/v1/endpoints", content=b"{" + b" " * 4000 + b"}")
    assert r.status_code == 413, "other routes keep the body limit"
    huge = zip_of(
        {f"f{i}.txt": "".join(f"{j:08d}" for j in range(100 * i, 100 * i + 2000)) for i in range(8)}
    )
    assert len(huge) > 64 * 1024
    r = h.api.post("/api/v1/packages", content=huge)
    assert r.status_code == 413 and "65536" in r.text


def test_package_upload_refuses_what_is_not_a_package(h: Harness) -> None:
    r = h.api.post("/api/v1/packages", content=b"plain text")
    assert r.status_code == 422 and "not a zip" in r.text
    r = h.anonymous.post("/api/v1/packages", content=zip_of({"a.py": ""}))
    assert r.status_code == 401


def test_package_upload_without_a_cluster_is_503(tmp_path: Path) -> None:
    rig = harness(boot(str(tmp_path)))
    r = rig.api.post("/api/v1/packages", content=zip_of({"a.py": ""}))
    assert r.status_code == 503
