"""The ``ripple`` command line against the shared instance, found through its data dir."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
from conftest import Instance, free_port, run_cli

pytestmark = pytest.mark.timeout(120)


def _cli(inst: Instance, *args: str, timeout_s: float = 60.0) -> tuple[int, str, str]:
    proc = run_cli(["--data-dir", str(inst.data_dir), *args], timeout_s=timeout_s)
    return proc.returncode, proc.stdout, proc.stderr


def test_endpoint_create_list_show_update_delete(ripple_app: Instance) -> None:
    name = f"cli-{uuid.uuid4().hex[:6]}"
    rc, out, err = _cli(ripple_app, "endpoint", "create", name, "--max-retries", "1", "--priority", "70")
    assert rc == 0, err
    created = json.loads(out)
    assert created["name"] == name and created["priority"] == 70 and created["maxRetries"] == 1
    assert created["handler"] is None

    rc, out, err = _cli(ripple_app, "endpoint", "list")
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:2] == ["name", "handler"]
    assert any(row.split()[0] == name for row in rows)

    # options after the command work too
    proc = run_cli(
        [
            "endpoint",
            "update",
            name,
            "--priority",
            "20",
            "--set",
            "maxQueueSize=5",
            "--data-dir",
            str(ripple_app.data_dir),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    updated = json.loads(proc.stdout)
    assert updated["priority"] == 20 and updated["maxQueueSize"] == 5 and updated["maxRetries"] == 1

    rc, out, _ = _cli(ripple_app, "endpoint", "show", name)
    assert rc == 0 and json.loads(out) == updated

    rc, _, err = _cli(ripple_app, "endpoint", "update", name, "--priority", "500")
    assert rc != 0 and "priority" in err and "Traceback" not in err
    rc, _, err = _cli(ripple_app, "endpoint", "create", name)
    assert rc != 0 and "already exists" in err

    rc, out, err = _cli(ripple_app, "endpoint", "delete", name)
    assert rc == 0, err
    assert json.loads(out)["deleted"] is True
    rc, _, err = _cli(ripple_app, "endpoint", "show", name)
    assert rc == 1 and "not found" in err and "Traceback" not in err
    rc, _, err = _cli(ripple_app, "endpoint", "show")
    assert rc == 2 and "NAME" in err


def test_submit_one_and_a_file(ripple_app: Instance, workers: object, tmp_path: Path) -> None:
    name = ripple_app.create_endpoint("cli-submit")
    workers(ripple_app, name, "echo")  # type: ignore[operator]

    rc, out, err = _cli(ripple_app, "submit", name, "--input", '{"q": 1}', "--wait", "--timeout", "60")
    assert rc == 0, err
    (line,) = out.splitlines()
    result = json.loads(line)
    assert result["status"] == "COMPLETED" and result["output"] == {"echo": {"q": 1}}

    rc, out, err = _cli(ripple_app, "submit", name, "--input", '{"nowait": true}')
    assert rc == 0, err
    (job_id,) = out.split()
    uuid.UUID(job_id)

    jobs = tmp_path / "jobs.jsonl"
    inputs = [{"n": i} for i in range(4)]
    lines = [json.dumps(x) if i % 2 else json.dumps({"input": x}) for i, x in enumerate(inputs)]
    jobs.write_text("\n".join(lines) + "\n\n")
    results = tmp_path / "results.jsonl"
    rc, out, err = _cli(
        ripple_app,
        "submit",
        name,
        "--file",
        str(jobs),
        "--out",
        str(results),
        "--wait",
        "--timeout",
        "90",
        timeout_s=110,
    )
    assert rc == 0, err
    got = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["status"] for r in got] == ["COMPLETED"] * 4
    assert [r["output"] for r in got] == [{"echo": x} for x in inputs]

    rc, _, err = _cli(ripple_app, "submit", "no-such-endpoint", "--input", "{}")
    assert rc == 1 and "not found" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("env", "args", "setting"),
    [
        ({"RIPPLE_PORT": "abc"}, [], "RIPPLE_PORT"),
        ({}, ["--port", "70000"], "port"),
        ({"RIPPLE_HEARTBEAT_TIMEOUT_S": "-1"}, [], "RIPPLE_HEARTBEAT_TIMEOUT_S"),
        ({"RIPPLE_LOG_LEVEL": "LOUD"}, [], "RIPPLE_LOG_LEVEL"),
        ({"RIPPLE_REDIS_URL": "localhost:6379"}, [], "RIPPLE_REDIS_URL"),
        (
            {},
            ["--redis-url", f"redis://127.0.0.1:{free_port()}", "--port", str(free_port())],
            "cannot reach the store at redis://127.0.0.1:",
        ),
        ({"RIPPLE_DIRECT_INGRESS_PORT": "80"}, [], "RIPPLE_DIRECT_INGRESS_PORT"),
        (
            {"RIPPLE_DIRECT_INGRESS_PORT": "30000", "RAY_ADDRESS": "127.0.0.1:1"},
            [],
            "RIPPLE_DIRECT_INGRESS_PORT",
        ),
    ],
)
def test_invalid_settings_stop_up(tmp_path: Path, env: dict[str, str], args: list[str], setting: str) -> None:
    from conftest import ripple_env

    data_dir = tmp_path / "data"
    proc = run_cli(["up", "--data-dir", str(data_dir), "--detach", *args], env=ripple_env(env), timeout_s=60)
    assert proc.returncode != 0
    assert setting in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (data_dir / "ripple.json").exists()
    assert not (data_dir / "redis.pid").exists()


def test_up_refuses_a_port_another_server_holds(tmp_path: Path) -> None:
    """Serve's proxy binds with SO_REUSEPORT: without the check a second instance would share the port with
    the first (each answering half of the requests). Refused before anything starts."""
    from conftest import ripple_env

    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        data_dir = tmp_path / "data"
        args = ["up", "--data-dir", str(data_dir), "--detach", "--port", str(port)]
        proc = run_cli(args, env=ripple_env({}), timeout_s=60)
    assert proc.returncode == 2 and f"Port {port} on 127.0.0.1 is in use" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (data_dir / "ripple.json").exists() and not (data_dir / "redis.pid").exists()


def test_up_again_leaves_the_detached_instance_of_its_data_dir_running(ripple_app: Instance) -> None:
    """The recorded pid of a detached instance is the ``ripple up`` that returned: a second ``ripple up``
    took the live Ray head for a crash's leftover and killed it, jobs and all. Refused now."""
    args = ["up", "--data-dir", str(ripple_app.data_dir), "--detach"]
    proc = run_cli(args, env=ripple_app.env, timeout_s=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"Ripple is already running from {ripple_app.data_dir.resolve()}" in proc.stdout
    with ripple_app.client() as c:
        assert c.get("/health/ready").status_code == 200, "the instance serves on"


def test_no_instance_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["endpoint", "list"], ["submit", "x", "--input", "{}"]):
        proc = run_cli(["--url", url, "--data-dir", str(tmp_path), *args])
        assert proc.returncode == 1
        assert "cannot reach Ripple" in proc.stderr and url in proc.stderr
        assert "Traceback" not in proc.stderr
