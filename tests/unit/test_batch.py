"""The batch runner (``python -m orchestrator.batch``) says why its jobs wait, not only how many are done."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from orchestrator import batch

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
