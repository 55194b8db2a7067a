"""``ripple deploy`` as a user runs it: a folder of handler code to an endpoint, version by version.

Against the shared instance (found through its data dir, as the CLI finds it): deploy v1 (the endpoint is
created), run a job (v1's output, ``version`` 1 on the job), deploy v2 with a ``requirements.txt`` naming a
small pure-Python package that is not installed here (the replica imports it: Ray installs it into the
replica's runtime env from the package index pip is configured with), see both versions listed, deploy a
v3 whose handler does not import (the deploy fails with the error, v2 keeps serving), roll back to v1,
delete the endpoint (its packages leave the cluster and the data dir).
A local ``working_dir`` given to the API is refused with 422. Each handler module has a unique name, so
nothing but the uploaded package can provide it.
"""

from __future__ import annotations

import importlib.util
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import FAST_ENV, Instance, run_cli

pytestmark = pytest.mark.timeout(900)

GRACE_S = float(FAST_ENV["RIPPLE_PACKAGE_GRACE_S"])
PIP_PACKAGE = "inflection"  # pure Python, ~10 kB, not a dependency of Ripple or Ray


def _cli(inst: Instance, *args: str, timeout_s: float = 420.0) -> tuple[int, str, str]:
    proc = run_cli(["--data-dir", str(inst.data_dir), *args], timeout_s=timeout_s)
    return proc.returncode, proc.stdout, proc.stderr


def _folder(root: Path, module: str, body: str, requirements: str | None = None) -> Path:
    root.mkdir(parents=True)
    (root / f"{module}.py").write_text(body)
    (root / ".gitignore").write_text("*.bin\n")
    (root / "weights.bin").write_bytes(b"\0" * 4096)  # ignored: never uploaded
    if requirements is not None:
        (root / "requirements.txt").write_text(requirements)
    return root


def _run(inst: Instance, name: str, word: str) -> dict[str, Any]:
    with inst.client(timeout_s=330) as c:
        r = c.post(f"/v2/{name}/runsync", params={"wait": 300_000}, json={"input": {"word": word}})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["status"] == "COMPLETED", out
    return out


def test_deploy_versions_requirements_failure_and_rollback(ripple_app: Instance, tmp_path: Path) -> None:
    assert importlib.util.find_spec(PIP_PACKAGE) is None, f"{PIP_PACKAGE} is installed here: pick another"
    name = f"dep-{uuid.uuid4().hex[:6]}"
    module = f"deploy_e2e_{uuid.uuid4().hex[:8]}"
    v1 = _folder(
        tmp_path / "v1",
        module,
        "def handler(job):\n    return {'from': 'v1', 'word': job['input']['word']}\n",
    )
    sets = ["--set", "gpus=0", "--set", "maxReplicas=2", "--set", "scaleDownIdleTime=600"]

    rc, out, err = _cli(
        ripple_app, "deploy", str(v1), "--endpoint", name, "--handler", f"{module}:handler", *sets
    )
    assert rc == 0, out + err
    assert f"Endpoint {name} created: version 1" in out and "Version 1 of" in out and "is active" in out
    assert "Packaged 2 files" in out, "the .gitignore'd weights stay home"
    first = _run(ripple_app, name, "hello_world")
    assert first["output"] == {"from": "v1", "word": "hello_world"} and first["version"] == 1
    with ripple_app.client() as c:
        detail = c.get(f"/api/v1/jobs/{first['id']}").json()
    assert detail["version"] == 1

    rc, out, err = _cli(ripple_app, "deploy", str(v1), "--endpoint", name)
    assert rc == 0, out + err
    assert "already in the cluster" in out and "nothing changed, version 1" in out

    v2 = _folder(
        tmp_path / "v2",
        module,
        "import inflection\n\n\ndef handler(job):\n"
        "    return {'from': 'v2', 'word': inflection.camelize(job['input']['word'])}\n",
        requirements=f"{PIP_PACKAGE}==0.5.1\n",
    )
    rc, out, err = _cli(ripple_app, "deploy", str(v2), "--endpoint", name)
    assert rc == 0, out + err
    assert f"Endpoint {name}: version 2" in out and "1 packages into runtimeEnv.pip" in out
    assert "Version 2 of" in out and "is active" in out
    second = _run(ripple_app, name, "hello_world")
    assert second["output"] == {"from": "v2", "word": "HelloWorld"} and second["version"] == 2

    rc, out, err = _cli(ripple_app, "versions", name, "--json")
    assert rc == 0, err
    listed = json.loads(out)
    assert [(v["version"], v["state"]) for v in listed] == [(2, "active"), (1, "retired")]
    assert listed[0]["changed"] == ["codeDigest", "runtimeEnv"] and listed[0]["codeDigest"].startswith(
        "sha256:"
    )
    assert listed[0]["runtimeEnv"]["pip"] == [f"{PIP_PACKAGE}==0.5.1"]
    assert listed[0]["runtimeEnv"]["working_dir"].startswith("gcs://_ray_pkg_")
    rc, out, _ = _cli(ripple_app, "versions", name)
    assert rc == 0 and out.splitlines()[1].split()[:2] == ["2", "active"]

    broken = _folder(
        tmp_path / "v3", module, "import no_such_module_here\n\n\ndef handler(job):\n    return 3\n"
    )
    rc, out, err = _cli(ripple_app, "deploy", str(broken), "--endpoint", name, "--timeout", "300")
    last_upload_s = time.monotonic()  # the last package arrived before this
    assert rc == 1, out + err
    assert "no_such_module_here" in out, out
    third = _run(ripple_app, name, "still_serving")
    assert third["output"]["from"] == "v2" and third["version"] == 2, "v2 keeps serving"

    rc, out, err = _cli(ripple_app, "rollback", name, "--to", "1")
    assert rc == 0, out + err
    assert "rolled back to version 1's code as version 4" in out and "is active" in out
    back = _run(ripple_app, name, "hello_world")
    assert back["output"] == {"from": "v1", "word": "hello_world"} and back["version"] == 4

    # Deleted with its endpoint, once past the grace of an upload no version names yet (20 s here):
    # every version's package leaves the cluster and the data dir.
    with ripple_app.client() as c:
        versions = c.get(f"/api/v1/endpoints/{name}/versions").json()["versions"]
        uris = {v["runtimeEnv"]["working_dir"] for v in versions}
        kept = {uri: ripple_app.data_dir / "packages" / uri.removeprefix("gcs://") for uri in uris}
        assert len(kept) == 3 and all(path.exists() for path in kept.values())
        v1_zip = kept[listed[1]["runtimeEnv"]["working_dir"]].read_bytes()
        time.sleep(max(0.0, last_upload_s + GRACE_S + 1 - time.monotonic()))
        assert c.delete(f"/api/v1/endpoints/{name}").status_code == 200
        assert [uri for uri, path in kept.items() if path.exists()] == []
        again = c.post("/api/v1/packages", content=v1_zip)
        assert again.status_code == 201 and again.json()["existed"] is False, "gone from Ray's GCS too"


def test_local_working_dir_is_refused_with_422(ripple_app: Instance, tmp_path: Path) -> None:
    body = {
        "name": f"loc-{uuid.uuid4().hex[:6]}",
        "handler": "h:f",
        "runtimeEnv": {"working_dir": str(tmp_path)},
    }
    with ripple_app.client() as c:
        r = c.post("/api/v1/endpoints", json=body)
    assert r.status_code == 422, r.text
    assert "runtimeEnv.working_dir" in r.text and "ripple deploy" in r.text
    with httpx.Client(base_url=ripple_app.url) as anonymous:
        assert anonymous.post("/api/v1/packages", content=b"PK").status_code == 401
