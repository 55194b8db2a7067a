"""A user's mistake on ``ripple``'s command line (a jobs file or flag that is not JSON, a file that is not
there) is one line naming what and why, with a non-zero exit, before any call to Ripple: no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.cli.main import main

pytestmark = pytest.mark.timeout(20)

NOWHERE = ["--url", "http://127.0.0.1:9"]  # nothing listens there: a call to Ripple would fail otherwise


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RIPPLE_API_KEY", "rk_x")
    monkeypatch.setenv("RIPPLE_DATA_DIR", str(tmp_path / "data"))


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip()


def test_a_jobs_file_with_a_bad_line_submits_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"input": 1}\n{"input": 2,}\n')
    assert main([*NOWHERE, "submit", "ep", "--file", str(jobs)]) == 1
    why = "Expecting property name enclosed in double quotes at column 13"
    assert _err(capsys) == f"ripple: {jobs}, line 2: not valid JSON ({why})"
    assert main([*NOWHERE, "submit", "ep", "--file", str(tmp_path / "nope.jsonl")]) == 1
    assert _err(capsys) == f"ripple: cannot read {tmp_path / 'nope.jsonl'}: No such file or directory"


@pytest.mark.parametrize(
    "args",
    [["submit", "ep", "--input", "{bad"], ["endpoint", "update", "ep", "--runtime-env", "{bad"]],
)
def test_a_json_flag_that_is_not_json_is_named(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*NOWHERE, *args])
    assert exc.value.code == 2
    flag = args[-2]
    assert _err(capsys).startswith(f"ripple: {flag} is not valid JSON (Expecting property name")


def test_with_no_instance_recorded_the_default_url_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RIPPLE_PORT", "9")  # the default URL: nothing listens there
    assert main(["endpoint", "list"]) == 1
    err = _err(capsys)
    assert err.startswith("ripple: cannot reach Ripple at http://127.0.0.1:9/api/v1/endpoints: ")
    assert err.endswith(
        f"(no instance is recorded in {tmp_path / 'data'}, so this asked the default URL: choose one with "
        "--data-dir or --url)"
    )
    assert main(["status"]) == 1, "status exits non-zero when Ripple does not answer"
    err = _err(capsys)
    assert err.startswith("ripple: Ripple is not answering: ") and "so this asked the default URL" in err


class _Submits:
    """The client calls ``ripple submit`` makes, recorded."""

    def __init__(self) -> None:
        self.inputs: list[object] = []

    def submit(self, endpoint: str, input: object) -> str:
        self.inputs.append(input)
        return "j1"

    def submit_many(self, endpoint: str, inputs: list[object], chunk: int) -> list[str]:
        self.inputs += inputs
        return [f"j{i}" for i in range(len(inputs))]


def test_each_line_of_a_jobs_file_is_an_input_or_a_job_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = _Submits()
    monkeypatch.setattr(sys.modules["orchestrator.cli.main"], "_client", lambda args: client)
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"input": {"input": 1}}\n{"prompt": "x"}\n')
    assert main(["submit", "ep", "--file", str(jobs)]) == 0
    assert client.inputs == [{"input": 1}, {"prompt": "x"}], "a job's input is taken out once"
    assert main(["submit", "ep", "--input", '{"input": {"a": 1}}']) == 0
    assert client.inputs[-1] == {"a": 1}
    assert capsys.readouterr().out.split() == ["j0", "j1", "j1"]
