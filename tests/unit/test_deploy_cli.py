"""``ripple deploy``'s packaging (``.gitignore``, default excludes, determinism, size limit) and the
endpoint fields it sends; ``follow``'s verdicts on a scripted API."""

from __future__ import annotations

import argparse
import io
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.deploy import (
    build_package,
    cmd_deploy,
    cmd_versions,
    deploy_body,
    follow,
    syntax_problems,
)
from orchestrator.core.errors import InvalidInput


def make_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def names(data: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return zf.namelist()


def test_package_respects_gitignore_and_default_excludes(tmp_path: Path) -> None:
    make_tree(
        tmp_path,
        {
            "handler.py": "def handler(job): return 1\n",
            "requirements.txt": "six\n",
            ".gitignore": "*.ckpt\ndata/\n!keep.ckpt\n",
            "model.ckpt": "big",
            "keep.ckpt": "small",
            "data/x.csv": "1",
            "src/util.py": "",
            "src/.gitignore": "secret.txt\n",
            "src/secret.txt": "s",
            ".git/HEAD": "ref",
            "__pycache__/handler.cpython-311.pyc": "",
            ".venv/bin/python": "",
            "notes.tmp": "",
        },
    )
    pkg = build_package(tmp_path, 1 << 20, excludes=["*.tmp"])
    assert sorted(names(pkg.data)) == sorted(
        [".gitignore", "handler.py", "keep.ckpt", "requirements.txt", "src/.gitignore", "src/util.py"]
    )
    assert pkg.has_requirements
    assert build_package(tmp_path, 1 << 20, excludes=["*.tmp"]).data == pkg.data, "deterministic"
    (tmp_path / "handler.py").write_text("def handler(job): return 2\n")
    assert build_package(tmp_path, 1 << 20, excludes=["*.tmp"]).data != pkg.data


def test_package_limit_names_the_largest_files(tmp_path: Path) -> None:
    make_tree(tmp_path, {"h.py": ""})
    (tmp_path / "weights.bin").write_bytes(os.urandom(300_000))  # incompressible
    with pytest.raises(InvalidInput, match=r"over the limit.*weights\.bin"):
        build_package(tmp_path, 100_000)


def test_package_of_nothing_or_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a folder"):
        build_package(tmp_path / "missing", 1000)
    make_tree(tmp_path, {".git/HEAD": "x"})
    with pytest.raises(InvalidInput, match="nothing to package"):
        build_package(tmp_path, 1000)


PKG = {"uri": "gcs://_ray_pkg_abc.zip", "codeDigest": "sha256:1", "requirements": ["six"]}


def test_deploy_body_sets_code_and_pip() -> None:
    existing = {
        "runtimeEnv": {"working_dir": "gcs://_ray_pkg_old.zip", "pip": ["old"], "env_vars": {"A": "1"}}
    }
    body = deploy_body(existing, PKG, "handler:run", {"gpus": 0})
    assert body == {
        "gpus": 0,
        "runtimeEnv": {"env_vars": {"A": "1"}, "working_dir": PKG["uri"], "pip": ["six"]},
        "codeDigest": "sha256:1",
        "handler": "handler:run",
    }
    no_reqs = deploy_body(existing, {**PKG, "requirements": None}, None, {})
    assert no_reqs["runtimeEnv"] == {"env_vars": {"A": "1"}, "working_dir": PKG["uri"]}
    assert "handler" not in no_reqs
    override = deploy_body(existing, PKG, None, {"runtimeEnv": {"env_vars": {"B": "2"}}})
    assert override["runtimeEnv"] == {"env_vars": {"B": "2"}, "working_dir": PKG["uri"], "pip": ["six"]}


class ScriptedApi:
    """Replies to ``follow``'s GETs from a script of (version state, error, problem) steps."""

    def __init__(self, steps: list[tuple[str, str | None, dict[str, Any] | None]]) -> None:
        self.steps = steps
        self.i = -1

    def request(self, method: str, path: str, **_: Any) -> Any:
        if path.endswith("/versions"):
            self.i = min(self.i + 1, len(self.steps) - 1)
            state, error, _problem = self.steps[self.i]
            return {"versions": [{"version": 2, "state": state, "error": error}]}
        if path.endswith("/workers"):
            return {"workers": [{"workerId": "w", "state": "starting", "version": 2}]}
        return {"name": "ep", "problem": self.steps[self.i][2]}


@pytest.mark.parametrize(
    ("steps", "code", "says"),
    [
        ([("rolling_out", None, None), ("active", None, None)], 0, "is active"),
        ([("rolling_out", None, None), ("failed", "ImportError: nope", None)], 1, "ImportError: nope"),
        ([("retired", None, None)], 1, "superseded"),
        (
            [
                (
                    "rolling_out",
                    None,
                    {"code": "start_failed", "message": "boom", "at": 10**13, "detail": "tb"},
                )
            ],
            1,
            "cannot start: boom",
        ),
        ([("rolling_out", None, None)], 1, "still rolling_out"),
    ],
)
def test_follow_verdicts(steps: list[Any], code: int, says: str) -> None:
    out = io.StringIO()
    ticks = iter(range(1000))
    rc = follow(ScriptedApi(steps), "ep", 2, 5.0, poll_s=0.0, out=out, clock=lambda: float(next(ticks)))
    assert rc == code and says in out.getvalue()
    assert "version 2" in out.getvalue() and "1 starting" in out.getvalue()


def test_a_version_active_with_no_replica_says_its_code_loads_with_the_first_job() -> None:
    out = io.StringIO()
    steps: list[Any] = [("active", None, None)]
    assert follow(ScriptedApi(steps), "ep", 2, 5.0, poll_s=0.0, out=out) == 0
    assert "is active.\nNo replica runs it yet" in out.getvalue()


class RecordingApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, **_: Any) -> Any:
        self.calls.append((method, path))
        raise AssertionError(f"nothing should reach the API: {method} {path}")


def test_deploy_refuses_python_files_that_do_not_compile_before_uploading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_tree(
        tmp_path,
        {
            "handler.py": "import helpers\n\ndef handler(job):\n    return helpers.f(job)\n",
            "helpers.py": "def f(job)\n    return 1\n",
            "src/escapes.py": 'PATTERN = "\\d+"\n',  # a SyntaxWarning (invalid escape), not a failure
            "src/tabs.py": "if True:\n\tx = 1\n        y = 2\n",
            "notes.txt": "def (",
        },
    )
    files = build_package(tmp_path, 10**6).files
    assert syntax_problems(tmp_path, files) == [
        "helpers.py, line 1: SyntaxError: expected ':'",
        "src/tabs.py, line 3: TabError: inconsistent use of tabs and spaces in indentation",
    ]
    args = argparse.Namespace(path=str(tmp_path), endpoint="ep", exclude=None, no_check=False)
    api = RecordingApi()
    assert cmd_deploy(args, api, 10**6) == 1 and api.calls == []
    err = capsys.readouterr().err
    assert "helpers.py, line 1: SyntaxError: expected ':'" in err and "nothing was uploaded" in err
    assert "--no-check" in err


class VersionsApi:
    def request(self, method: str, path: str, **_: Any) -> Any:
        assert (method, path) == ("GET", "/api/v1/endpoints/ep/versions")
        return {
            "versions": [
                {"version": 2, "state": "active", "createdAt": 0, "codeDigest": "sha256:" + "b" * 64},
                {"version": 1, "state": "retired", "codeDigest": "sha256:a", "codeDeletedAt": 5},
            ]
        }


def test_versions_table_says_which_versions_code_was_deleted(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_versions(argparse.Namespace(name="ep", json=False), VersionsApi()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "sha256:bbbbbbbbbbbb" in lines[1] and lines[2].split()[:2] == ["1", "retired"]
    assert "deleted" in lines[2] and "sha256" not in lines[2]
