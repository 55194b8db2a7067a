"""The batch runner (``python -m orchestrator.batch``) says why its jobs wait, not only how many are done."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import batch
from orchestrator.core.errors import InvalidInput
from orchestrator.core.jobs import inputs_of_lines

pytestmark = pytest.mark.timeout(10)

NO_GPU = {"code": "no_gpu", "message": "no node has a free GPU of type A100 (0 of 2 free)"}


class FakeClient:
    """The in-cluster client's calls the runner makes: for ``queued_polls`` polls, the first job runs and
    the others are queued (with ``reason`` as their ``waitReason`` when given); then all are done."""

    def __init__(self, queued_polls: int, reason: dict[str, str] | None = NO_GPU) -> None:
        self.queued_polls = queued_polls
        self.reason = reason
        self.polls = 0

    def submit_many(self, endpoint: str, inputs: Sequence[Any], chunk: int = 5000) -> list[str]:
        return [f"j{i}" for i in range(len(inputs))]

    def statuses(self, job_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        self.polls += 1
        if self.polls > self.queued_polls:
            return [{"id": j, "status": "COMPLETED", "output": 1} for j in job_ids]
        out: list[dict[str, Any] | None] = []
        for j in job_ids:
            st: dict[str, Any] = {"id": j, "status": "IN_PROGRESS" if j == "j0" else "IN_QUEUE"}
            if st["status"] == "IN_QUEUE" and self.reason is not None:
                st["waitReason"] = self.reason
            out.append(st)
        return out


def _run(tmp_path: Path, client: FakeClient) -> dict[str, int]:
    src = tmp_path / "jobs.jsonl"
    src.write_text("".join(json.dumps({"input": n}) + "\n" for n in range(3)))
    return batch.run("ep", src, tmp_path / "out.jsonl", client=client, poll_s=0.01, timeout_s=5.0)


def test_progress_says_why_the_first_queued_job_waits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = FakeClient(queued_polls=1)
    assert _run(tmp_path, client) == {"COMPLETED": 3}
    lines = capsys.readouterr().out.splitlines()
    assert f"done 0/3 (0%); job j1 waiting (no_gpu): {NO_GPU['message']}" in lines
    assert lines[-2] == "done 3/3 (100%)", "nothing waits once every job is done"
    assert client.polls == 2, "the reason came with the statuses, not a call of its own"


def test_progress_is_reported_when_no_job_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(tmp_path, FakeClient(queued_polls=1, reason=None)) == {"COMPLETED": 3}
    assert "done 0/3 (0%)" in capsys.readouterr().out.splitlines()


def test_a_file_with_a_line_that_is_not_json_submits_nothing_and_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "jobs.jsonl"
    src.write_text('{"input": 1}\n\n{"input": 2}\nnot json\n')
    client = FakeClient(queued_polls=0)
    why = r"jobs\.jsonl, line 4: not valid JSON \(Expecting value at column 1\)"
    with pytest.raises(InvalidInput, match=why):
        batch.run("ep", src, tmp_path / "out.jsonl", client=client)
    assert client.polls == 0 and not (tmp_path / "out.jsonl.ids").exists()
    with pytest.raises(InvalidInput, match=r"cannot read .*missing\.jsonl: No such file or directory"):
        batch.run("ep", tmp_path / "missing.jsonl", tmp_path / "out.jsonl", client=client)
    (tmp_path / "blank.jsonl").write_text("\n \n")
    with pytest.raises(InvalidInput, match=r"blank\.jsonl: no jobs in it"):
        batch.run("ep", tmp_path / "blank.jsonl", tmp_path / "out.jsonl", client=client)


def test_lines_are_inputs_or_jobs_with_an_input() -> None:
    lines = ['{"input": {"p": 1}, "webhook": null}', "", "[1, 2]", '{"prompt": "x"}', "3"]
    assert inputs_of_lines(lines, "f") == [{"p": 1}, [1, 2], {"prompt": "x"}, 3]


def test_a_rerun_resumes_only_with_the_same_endpoint_and_input(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert _run(tmp_path, FakeClient(queued_polls=0)) == {"COMPLETED": 3}
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl.ids").read_text().splitlines()]
    assert rows == [{"line": i, "id": f"j{i}", "endpoint": "ep"} for i in range(3)]
    with pytest.raises(InvalidInput, match="submitted to endpoint 'ep', not 'other': use another --output"):
        batch.run("other", tmp_path / "jobs.jsonl", out, client=FakeClient(queued_polls=0))
    (tmp_path / "short.jsonl").write_text('{"input": 0}\n')
    with pytest.raises(InvalidInput, match="a job for input line 2, and the input has 1 jobs now"):
        batch.run("ep", tmp_path / "short.jsonl", out, client=FakeClient(queued_polls=0))


def test_a_torn_last_id_line_is_submitted_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An earlier run submitted line 0 (its id is not one this run's client hands out) and was cut off
    # while writing line 1's.
    (tmp_path / "out.jsonl.ids").write_text('{"line": 0, "id": "old-0", "endpoint": "ep"}\n{"line": 1, "i')
    assert _run(tmp_path, FakeClient(queued_polls=0)) == {"COMPLETED": 3}
    assert "3 jobs in" in (out := capsys.readouterr().out) and "1 already submitted; submitting 2" in out


def test_main_says_what_went_wrong_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "jobs.jsonl").write_text("{nope\n")
    args = ["--endpoint", "ep", "--input", str(tmp_path / "jobs.jsonl"), "--output", str(tmp_path / "o")]
    assert batch.main(args) == 1  # refused before joining Ray
    err = capsys.readouterr().err
    assert err.startswith("batch: ") and "line 1: not valid JSON" in err and "Traceback" not in err
