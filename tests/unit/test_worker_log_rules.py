"""Who has logs, what counts as a printed line, and what ``ripple logs NAME`` selects."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.cli.logs import Selection, logs_path, select, show
from orchestrator.core.errors import Conflict, NotFound
from orchestrator.core.worker_logs import LineSplitter, clean_lines, last_lines, log_target, prefixed

pytestmark = pytest.mark.timeout(10)

ACTOR = "a" * 32


def _ray(wid: str, endpoint: str = "ep", **kw: Any) -> dict[str, Any]:
    return {"workerId": wid, "endpoint": endpoint, "kind": "ray", "actorId": ACTOR, "nodeId": "n1", **kw}


def test_log_target_of_a_replica() -> None:
    t = log_target("w1", _ray("w1"))
    assert (t.worker_id, t.endpoint, t.actor_id, t.node_id) == ("w1", "ep", ACTOR, "n1")
    assert log_target("w1", _ray("w1", nodeId=None)).node_id is None


def test_unknown_outside_and_unplaced_workers_have_no_log_target() -> None:
    with pytest.raises(NotFound, match="'w9' not found"):
        log_target("w9", None)
    with pytest.raises(Conflict, match="outside worker") as err:
        log_target("sdk-1", {"workerId": "sdk-1", "endpoint": "ep", "kind": "external"})
    assert "where that worker runs" in err.value.message
    with pytest.raises(Conflict, match="no Ray actor id"):
        log_target("w2", _ray("w2", actorId=None))


def test_clean_lines_drop_rays_markers_only() -> None:
    text = ":job_id:01000000\n:actor_name:WorkerReplica\nhello\n:task_name:run\n  :not a marker\nbye\n"
    assert clean_lines(text) == ["hello", "  :not a marker", "bye"]
    assert clean_lines("") == []


def test_last_lines() -> None:
    lines = ["a", "b", "c"]
    assert last_lines(lines, 2) == ["b", "c"] and last_lines(lines, -1) == lines
    assert last_lines(lines, 0) == [] and last_lines(lines, 10) == lines


def test_line_splitter_keeps_partial_lines_until_complete() -> None:
    s = LineSplitter()
    assert s.feed("one\ntw") == ["one"]
    assert s.feed("o\r\n:actor_name:X\nthr") == ["two"]
    assert s.flush() == ["thr"] and s.flush() == []
    assert prefixed("w1", "x") == "[w1] x"


def test_select_a_worker_by_id() -> None:
    sel = select("w1", [_ray("w1"), _ray("w2")], lambda _: True)
    assert sel.worker_ids == ["w1"] and not sel.prefix


def test_select_an_endpoints_replicas_prefixed_skipping_outside_workers() -> None:
    workers = [
        _ray("w2"),
        _ray("w1"),
        {"workerId": "sdk", "endpoint": "ep", "kind": "external"},
        _ray("x", "other"),
    ]
    sel = select("ep", workers, lambda _: True)
    assert sel.worker_ids == ["w1", "w2"] and sel.prefix and sel.skipped == ["sdk"]


def test_select_explains_an_endpoint_without_replica_logs() -> None:
    with pytest.raises(NotFound, match="outside workers"):
        select("ep", [{"workerId": "sdk", "endpoint": "ep", "kind": "external"}], lambda _: True)
    with pytest.raises(NotFound, match="no Ray replica now"):
        select("ep", [], lambda name: name == "ep")
    with pytest.raises(NotFound, match="no worker or endpoint named 'zz'"):
        select("zz", [_ray("w1")], lambda _: False)


def test_logs_path_quotes_and_follows() -> None:
    assert logs_path("w 1", 5, "stderr", False) == "/api/v1/workers/w%201/logs?tail=5&stream=stderr"
    assert logs_path("w1", -1, "stdout", True).endswith("&follow=true")


class _Logs:
    """The logs route of two replicas: ``w1`` printed a line, ``w2`` nothing."""

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return {"lines": ["hello"] if path.startswith("/api/v1/workers/w1/") else []}

    def lines(self, path: str, **kwargs: Any) -> Any:
        raise AssertionError("not followed")


def test_a_replica_that_printed_nothing_is_said_with_where_to_look() -> None:
    out: list[str] = []
    err: list[str] = []
    assert show(_Logs(), Selection(["w1", "w2"], True, []), 100, "stdout", out.append, err.append) == 0
    assert out == ["[w1] hello"]
    hint = "Python's logging writes to stderr: --stderr shows it"
    assert err == [f"ripple logs: worker w2 printed nothing to stdout; {hint}"]
    err.clear()
    show(_Logs(), Selection(["w2"], False, []), 100, "stderr", out.append, err.append)
    assert err == ["ripple logs: worker w2 printed nothing to stderr"]
