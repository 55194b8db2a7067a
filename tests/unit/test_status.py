"""``ripple status`` rendering from API replies (a fake of the client's ``request``)."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.cli.status import render_status
from orchestrator.core.errors import NotReady
from orchestrator.store.protocol import StoreMemory

pytestmark = pytest.mark.timeout(10)

REPLIES: dict[str, Any] = {
    "/api/v1/info": {
        "version": "0.1.0",
        "store": "embedded",
        "auth": True,
        "dashboardUrl": "http://127.0.0.1:8265",
    },
    "/api/v1/endpoints": {
        "endpoints": [
            {"name": "gen", "handler": "examples.handlers:echo", "gpus": 1},
            {"name": "ext", "handler": None, "gpus": 0},
        ]
    },
    "/api/v1/stats": {
        "endpoints": {
            "gen": {"queued": 4, "running": 1, "oldestQueuedAgeS": 300.0},
            "ext": {"queued": 0, "running": 0, "oldestQueuedAgeS": None},
        }
    },
    "/api/v1/workers": {
        "workers": [
            {"workerId": "gen-1", "endpoint": "gen", "state": "busy", "health": "healthy"},
            {"workerId": "gen-2", "endpoint": "gen", "state": "idle", "health": "quarantined"},
            {"workerId": "w-1", "endpoint": "ext", "state": "idle", "health": "healthy"},
            {"workerId": "w-2", "endpoint": "ext", "state": "stopped", "health": "healthy"},
        ]
    },
    "/api/v1/autoscaler/status": {
        "enabled": True,
        "gpus": {"total": 2.0, "used": 1.0, "free": 1.0},
        "endpoints": [
            {"endpoint": "gen", "current": 2, "desired": 3, "blocked": "not enough GPUs (0 GPUs free)"}
        ],
    },
}


class FakeClient:
    def __init__(self, replies: dict[str, Any], failing: tuple[str, ...] = ()) -> None:
        self.replies = replies
        self.failing = failing

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if path in self.failing:
            raise NotReady("a control actor is unavailable")
        return self.replies[path]


def test_one_screen_with_endpoints_queues_workers_gpus() -> None:
    out = render_status(FakeClient(REPLIES), color=False)
    assert "\033[" not in out
    lines = out.splitlines()
    assert (
        lines[0].startswith("Ripple 0.1.0") and "autoscaler: on" in lines[0] and "store: embedded" in lines[0]
    )
    assert "GPUs: 1 used / 2 total (1 free)" in out
    assert "Ray dashboard: http://127.0.0.1:8265" in out
    assert "Direct ingress" not in out  # off unless `ripple up` recorded it
    direct = render_status(FakeClient(REPLIES), color=False, direct_url="http://127.0.0.1:30000")
    assert "Direct ingress: http://127.0.0.1:30000 (the API without Serve's proxy)" in direct.splitlines()
    gen = next(ln for ln in lines if ln.startswith("gen "))
    assert "examples.handlers:echo" in gen and " 4 " in gen and "5m" in gen and "2/3" in gen
    assert "1 idle" not in gen and "1 busy, 1 quarantined" in gen
    ext = next(ln for ln in lines if ln.startswith("ext "))
    assert "outside workers" in ext and "1 idle, 1 stopped" in ext
    assert "blocked: gen: not enough GPUs" in out


def test_versions_and_problems_show() -> None:
    problem = {"code": "start_failed", "message": "1 replica(s) failed to start; latest gen-9: ImportError"}
    eps = {
        "endpoints": [
            {"name": "gen", "handler": "examples.handlers:echo", "gpus": 1, "version": 3, "problem": problem},
            {"name": "ext", "handler": None, "gpus": 0, "version": 1, "problem": None},
        ]
    }
    out = render_status(FakeClient({**REPLIES, "/api/v1/endpoints": eps}), color=False)
    gen = next(ln for ln in out.splitlines() if ln.startswith("gen "))
    assert "examples.handlers:echo (v3)" in gen
    assert "PROBLEM: gen: 1 replica(s) failed to start; latest gen-9: ImportError" in out
    assert "PROBLEM: ext" not in out
    colored = render_status(FakeClient({**REPLIES, "/api/v1/endpoints": eps}), color=True)
    assert "\033[31mPROBLEM: gen" in colored


def test_webhook_deliveries_that_did_not_arrive_show() -> None:
    last = {"jobId": "j-7", "outcome": "refused", "reason": "address 10.0.0.5 is private", "atS": 1.0}
    stats = {
        "endpoints": {
            "gen": {"queued": 0, "running": 0, "webhooks": {"delivered": 3, "failed": 0, "refused": 1,
                                                             "windowS": 3600.0, "lastProblem": last}},
            "ext": {"queued": 0, "running": 0, "webhooks": {"delivered": 9, "failed": 0, "refused": 0,
                                                             "windowS": 3600.0}},
        }
    }  # fmt: skip
    out = render_status(FakeClient({**REPLIES, "/api/v1/stats": stats}), color=False)
    assert (
        "webhooks: gen: 1 of 4 webhook deliveries in the last 60 min did not arrive (1 refused by the "
        "webhook policy); latest: job j-7 refused: address 10.0.0.5 is private"
    ) in out
    assert "webhooks: ext" not in out, "every delivery arrived"


def test_replicas_that_cannot_use_the_store_show() -> None:
    trouble = {"sinceS": 1000.0, "error": "no answer within 10 s"}
    workers = {
        "workers": [
            {"workerId": "gen-1", "endpoint": "gen", "state": "busy", "storeTrouble": trouble},
            {"workerId": "gen-2", "endpoint": "gen", "state": "idle", "storeTrouble": None},
            {"workerId": "gen-3", "endpoint": "gen", "state": "stopped", "storeTrouble": trouble},
        ]
    }
    out = render_status(FakeClient({**REPLIES, "/api/v1/workers": workers}), color=False, now_s=1045.0)
    line = next(ln for ln in out.splitlines() if ln.startswith("replicas: gen:"))
    assert "gen-1 for 45s (no answer within 10 s)" in line and "through the queue actor" in line
    assert "gen-2" not in line and "gen-3" not in line, "only live replicas in trouble"
    assert "replicas:" not in render_status(FakeClient(REPLIES), color=False), "none in trouble: no line"


def test_colour_only_when_asked() -> None:
    out = render_status(FakeClient(REPLIES), color=True)
    assert "\033[32mon" in out and "\033[33m" in out


def test_a_failing_autoscaler_shows_as_unavailable() -> None:
    out = render_status(FakeClient(REPLIES, failing=("/api/v1/autoscaler/status",)), color=False)
    assert "autoscaler: unavailable" in out
    assert "GPUs: unknown" in out
    assert "gen " in out


def test_unreachable_app_says_so() -> None:
    everything = tuple(REPLIES)
    with pytest.raises(NotReady) as info:  # ripple status then exits 1
        render_status(FakeClient(REPLIES, failing=everything), color=False)
    assert "not answering" in str(info.value) and "ripple doctor" in str(info.value)


def test_no_endpoints_yet() -> None:
    out = render_status(FakeClient({**REPLIES, "/api/v1/endpoints": {"endpoints": []}}), color=False)
    assert "No endpoints yet" in out


def test_the_store_s_memory_in_the_header_and_a_warning_when_near_its_limit() -> None:
    mib = 1024 * 1024

    def screen(used_mib: int, max_mib: int, endpoints: bool = True) -> str:
        ready = {"status": "ok", "storeMemory": {"usedBytes": used_mib * mib, "maxBytes": max_mib * mib}}
        replies = {**REPLIES, "/health/ready": ready}
        if not endpoints:
            replies["/api/v1/endpoints"] = {"endpoints": []}
        return render_status(FakeClient(replies), color=False)

    assert "store: embedded (40 MiB)   auth" in screen(40, 0), "no maxmemory: its use alone"
    calm = screen(100, 512)
    assert "store: embedded (100 of 512 MiB)" in calm and "full" not in calm
    near = screen(500, 512, endpoints=False).splitlines()
    assert "store: embedded (500 of 512 MiB)" in near[0]
    assert "store: the job store's Redis is 98% full: when full, no job can be queued" in near[3], near
    assert "store: embedded   auth" in render_status(FakeClient(REPLIES), color=False), "not known: no note"
    over = screen(700, 512)  # maxmemory lowered below what Redis holds
    assert "store: the job store's Redis is full: no job can be queued" in over and "%" not in over


@pytest.mark.parametrize(
    ("used_bytes", "max_bytes", "share", "high"),
    [(10, 0, None, False), (79, 100, 0.79, False), (80, 100, 0.8, True), (150, 100, 1.5, True)],
)
def test_the_store_s_memory_on_the_wire_says_its_share_and_whether_it_is_high(
    used_bytes: int, max_bytes: int, share: float | None, high: bool
) -> None:
    """The web UI shows what the server judged (as ``ripple status`` and ``ripple doctor`` judge it)."""
    wire = StoreMemory(used_bytes, max_bytes, "noeviction").wire()
    assert (wire["share"], wire["high"]) == (share, high)
    assert StoreMemory.from_wire(wire) == StoreMemory(used_bytes, max_bytes, "noeviction")
