"""The ``ripple`` command line: ``up``, ``down``, ``endpoint``, ``deploy``, ``versions``, ``rollback``,
``submit``, ``status``, ``logs``, ``keys``, ``doctor``.

``up`` and ``down`` manage a local instance (see :mod:`orchestrator.ops.local`); every other command talks to
a running instance over its HTTP API, found through ``--url`` / ``RIPPLE_URL`` or the data dir's state
file, with the key from ``RIPPLE_API_KEY`` or the data dir's keys.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx

from orchestrator.cli import deploy
from orchestrator.cli import keys as keys_cli
from orchestrator.cli.logs import add_parser as add_logs_parser
from orchestrator.core.errors import ConfigError, InvalidInput, NotFound, NotReady, RippleError, Unauthorized
from orchestrator.core.gpu_types import parse_gpus_flag
from orchestrator.ops import local, procs

log = logging.getLogger("ripple.cli")


def _settings(args: argparse.Namespace, **flags: Any) -> Any:
    from orchestrator.config import load_settings

    return load_settings(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), **flags)


# up / down ------------------------------------------------------------------------------------------


def _typed_gpus(args: argparse.Namespace) -> dict[str, float] | None:
    """``--gpus A100=1,L4=1`` parsed; SystemExit naming the flags when it is malformed or given with
    ``--num-gpus``."""
    if getattr(args, "gpus", None) is None:
        return None
    if args.num_gpus is not None:
        raise SystemExit(
            "ripple up: --gpus (typed GPUs) and --num-gpus (untyped GPUs) cannot be used together; "
            "--gpus A100=1,L4=1 already declares 2 GPUs"
        )
    try:
        return parse_gpus_flag(args.gpus)
    except ValueError as exc:
        raise SystemExit(f"ripple up: {exc}") from None


def cmd_up(args: argparse.Namespace) -> int:
    """Start a local Ray head (or join RAY_ADDRESS), the store, the actors and the Serve app."""
    import ray

    from actors.bootstrap import ensure_control_actors
    from orchestrator.auth import auth_config, load_or_create_keys
    from orchestrator.boot import boot_config
    from orchestrator.ops import instance as runtime

    typed_gpus = _typed_gpus(args)
    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        redis_url=args.redis_url,
        num_gpus=args.num_gpus,
        num_cpus=args.num_cpus,
        insecure=True if args.insecure else None,
    )
    if settings.direct_ingress_port is not None and os.environ.get("RAY_ADDRESS"):
        print(
            "RIPPLE_DIRECT_INGRESS_PORT needs the Ray head that `ripple up` starts (RAY_ADDRESS is set): on "
            "an existing cluster, start its nodes with RAY_SERVE_ENABLE_DIRECT_INGRESS=1 instead.",
            file=sys.stderr,
        )
        return 2
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = _running_instance(data_dir)
    if running is not None:
        print(running)
        return 1
    if not os.environ.get("RAY_ADDRESS") and not local.port_free(settings.port, settings.host):
        # Serve's proxy binds with SO_REUSEPORT: a second instance would start, and share the port with
        # the first, each answering half of the requests.
        print(
            f"Port {settings.port} on {settings.host} is in use (another Ripple instance, from another data "
            "dir, or another server): stop it, or choose another port with --port or RIPPLE_PORT.",
            file=sys.stderr,
        )
        return 2
    keys = load_or_create_keys(settings, create=not settings.insecure)
    local.configure_ray_auth(data_dir, own_head=not os.environ.get("RAY_ADDRESS"))
    # checked before Ray starts: one line, not a control actor's traceback
    store_url, embedded = runtime.resolve_store(settings, detach=True, check=True)
    head = None
    address = os.environ.get("RAY_ADDRESS")
    state = local.InstanceState(
        url="",
        data_dir=str(data_dir),
        ray_address=address or "",
        namespace=settings.namespace,
        pid=os.getpid(),
        ray_head_pid=None,
        embedded_store=embedded,
        dashboard_url=None,
        detached=bool(args.detach),
    )
    try:
        if not address:
            head, address = _start_head(data_dir, settings, typed_gpus)
            state.ray_address, state.ray_head_pid = address, head.pid
        ctx = ray.init(
            address=address,
            namespace=settings.namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
            **({} if os.environ.get("RAY_ADDRESS") else {"_node_ip_address": "127.0.0.1"}),
        )
        dashboard = getattr(ctx, "dashboard_url", None)
        state.dashboard_url = f"http://{dashboard}" if dashboard else None
        packages = _restore_packages(data_dir)
        boot = boot_config(
            settings, store_url, embedded, auth_config(settings, keys), state.dashboard_url, str(packages)
        )
        ensure_control_actors(boot)
        state.url = runtime.deploy_serve(boot, settings)
        if settings.direct_ingress_port is not None:
            state.direct_url = runtime.wait_direct_ingress(settings)
    except BaseException:
        _stop(state, settings.drain_timeout_s)
        raise
    local.write_state(data_dir, state)
    _banner(state, settings, keys)
    if args.detach:
        ray.shutdown()
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if head is not None and head.poll() is not None:
            print("The Ray head exited; stopping.", file=sys.stderr)
            break
    print("Stopping Ripple: draining workers ...", flush=True)
    _stop(state, settings.drain_timeout_s)
    print("Ripple stopped.")
    return 0


def _restore_packages(data_dir: Path) -> Path:
    """Where this instance keeps code packages (``DATA_DIR/packages``), those the Ray cluster lacks (a new
    head) put back first: the versions deployed before a ``ripple down`` start again."""
    from actors.packages import restore_packages

    packages = data_dir / "packages"
    restored = restore_packages(packages)
    if restored:
        print(f"Restored {len(restored)} code package(s) of deployed versions to Ray.", flush=True)
    return packages


def _running_instance(data_dir: Path) -> str | None:
    """Why ``ripple up`` must not start from ``data_dir``: the instance recorded there runs (its
    foreground ``ripple up`` is alive, or, detached, its API answers); None to go on. A Ray head that an
    instance left behind when it crashed (alive, with nothing answering) is stopped here."""
    previous = local.read_state(data_dir)
    if previous is None:
        return None
    running = f"Ripple is already running from {data_dir} at {previous.url}"
    if not previous.detached and procs.alive(previous.pid):
        return f"{running} (pid {previous.pid})."
    head = previous.ray_head_pid  # None: it joined a cluster (RAY_ADDRESS)
    head_alive = head is not None and procs.alive(head)
    if (head is None or head_alive) and previous.url and local.answers(previous.url):
        return f"{running} (detached; `ripple down` stops it)."
    if head is not None and head_alive:
        local.stop_process(head)
    return None


def _start_head(
    data_dir: Path, settings: Any, typed_gpus: dict[str, float] | None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the local Ray head of ``ripple up``, a second time when the first fails: Ray's raylet gives up
    when its agents start slowly (an overloaded machine)."""
    print("Starting a local Ray head ...", flush=True)
    for attempt in (1, 2):
        try:
            return local.start_ray_head(
                data_dir,
                num_gpus=settings.num_gpus,
                num_cpus=settings.num_cpus,
                typed_gpus=typed_gpus,
                dashboard=settings.dashboard,
                dashboard_port=settings.dashboard_port,
                detach=True,
                direct_ingress_port=settings.direct_ingress_port,
            )
        except NotReady as exc:
            if attempt == 2:
                raise
            print(f"The Ray head did not start ({exc}); retrying once ...", flush=True)
    raise AssertionError("unreachable")


def _banner(state: local.InstanceState, settings: Any, keys: Any) -> None:
    print(f"\nRipple is up: {state.url}")
    print(f"  client API:   {state.url}/v2/<endpoint>/run   (runpod SDK: endpoint_url_base={state.url}/v2)")
    print(f"  management:   {state.url}/api/v1   web UI: {state.url}/ui   metrics: {state.url}/metrics")
    if state.direct_url:
        print(f"  direct:       {state.direct_url}   (the same API, Serve's proxy skipped: direct ingress)")
    if state.dashboard_url:
        print(f"  Ray dashboard: {state.dashboard_url}")
    if os.environ.get("RAY_AUTH_TOKEN_PATH") and os.environ.get("RAY_AUTH_MODE") == "token":
        token_path = os.environ["RAY_AUTH_TOKEN_PATH"]
        print(f"  Ray token:    {token_path} (Ray clients: RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=<it>)")
    store = f"embedded Redis in {state.data_dir} (append-only)" if state.embedded_store else "external Redis"
    print(f"  store:        {store}")
    if settings.insecure:
        print("  WARNING: authentication is OFF (--insecure): anyone who can reach this port can use it.")
    elif keys.generated:
        print(f"  API key:      {keys.api_key}")
        print(f"  worker key:   {keys.worker_key}")
        print(f"  (printed once; kept in {keys.path}, mode 0600)")
    else:
        print(f"  keys:         {keys.path} (or RIPPLE_API_KEY / RIPPLE_WORKER_KEY)")
    print("" if state.detached else "Press Ctrl-C to stop.", flush=True)


def _stop(state: local.InstanceState, drain_timeout_s: float) -> None:
    import ray

    from orchestrator.ops import embedded_redis
    from orchestrator.ops import instance as runtime

    try:
        if not ray.is_initialized() and state.ray_address:
            local.configure_ray_auth(Path(state.data_dir), own_head=False)
            ray.init(
                address=state.ray_address,
                namespace=state.namespace,
                logging_level=logging.WARNING,
                log_to_driver=False,
                _node_ip_address="127.0.0.1",
            )
        if ray.is_initialized():
            from ray import serve

            print(
                f"Draining the replicas: the jobs they run finish first (at most {drain_timeout_s:g} s, "
                "RIPPLE_DRAIN_TIMEOUT_S); queued jobs stay in the store.",
                flush=True,
            )
            runtime.shutdown(state.namespace, drain_timeout_s=drain_timeout_s)
            serve.shutdown()
    except Exception as exc:  # stopping must go on: the head and the store still need stopping
        print(f"warning: graceful stop incomplete: {exc}", file=sys.stderr)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    if state.ray_head_pid:
        local.stop_process(state.ray_head_pid, timeout_s=60)
    if state.embedded_store:
        embedded_redis.stop(Path(state.data_dir))
    local.clear_state(Path(state.data_dir))


def cmd_down(args: argparse.Namespace) -> int:
    """Gracefully stop the instance of the data dir."""
    settings = _settings(args)
    data_dir = settings.data_dir.resolve()
    state = local.read_state(data_dir)
    if state is None:
        print(f"No Ripple instance recorded in {data_dir}.")
        return 1
    if not state.detached and state.pid != os.getpid() and procs.alive(state.pid):
        local.stop_process(state.pid, timeout_s=settings.drain_timeout_s + 60)
        if local.read_state(data_dir) is None:
            print("Ripple stopped.")
            return 0
    _stop(state, settings.drain_timeout_s)
    print("Ripple stopped.")
    return 0


# HTTP commands --------------------------------------------------------------------------------------


def _connect(args: argparse.Namespace) -> tuple[Any, local.InstanceState | None]:
    """A client of the instance (``--url`` / ``RIPPLE_URL``, else the data dir's), and the data dir's
    recorded state when that is where the URL came from."""
    from orchestrator.client import Client

    settings = _settings(args)
    data_dir = settings.data_dir.resolve()
    url = args.url or os.environ.get("RIPPLE_URL")
    state = None
    if not url:
        state = local.read_state(data_dir)
        url = state.url if state else f"http://127.0.0.1:{settings.port}"
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if key is None and (data_dir / "keys.json").exists():
        key = json.loads((data_dir / "keys.json").read_text()).get("api_key")
    return Client(url, key), state


def _client(args: argparse.Namespace) -> Any:
    return _connect(args)[0]


def _gpu_types_arg(text: str) -> list[str]:
    """``--gpu-types H100,A100``: the preference list (validated by the API, which names the field)."""
    return [t.strip() for t in text.split(",")]


ENDPOINT_FLAGS: dict[str, tuple[str, Any]] = {
    "handler": ("handler", str),
    "gpus": ("gpus", float),
    "gpu_types": ("gpuTypes", _gpu_types_arg),
    "cpus": ("cpus", float),
    "memory_mb": ("memoryMb", int),
    "concurrency": ("concurrency", int),
    "min": ("minReplicas", int),
    "max": ("maxReplicas", int),
    "priority": ("priority", int),
    "scale_up_threshold": ("scaleUpThreshold", int),
    "scale_down_idle_time": ("scaleDownIdleTime", float),
    "execution_timeout": ("executionTimeout", int),
    "ttl": ("ttl", int),
    "max_retries": ("maxRetries", int),
    "max_queue_size": ("maxQueueSize", int),
    "keep_alive": ("keepAlive", str),
}


def _endpoint_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for flag, (field, _) in ENDPOINT_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            body[field] = value
    if getattr(args, "runtime_env", None):
        body["runtimeEnv"] = _json_flag("--runtime-env", args.runtime_env)
    for item in getattr(args, "set", None) or []:
        key, _, raw = item.partition("=")
        try:
            body[key] = json.loads(raw)
        except ValueError:
            body[key] = raw
    return body


def cmd_endpoint(args: argparse.Namespace) -> int:
    c = _client(args)
    if args.action == "create":
        out = c.request("POST", "/api/v1/endpoints", json={"name": args.name, **_endpoint_body(args)})
        _warn_if_never_fits(c, out)
    elif args.action == "update":
        out = c.request("PATCH", f"/api/v1/endpoints/{args.name}", json=_endpoint_body(args))
    elif args.action == "show":
        out = c.request("GET", f"/api/v1/endpoints/{args.name}")
    elif args.action == "delete":
        out = c.request("DELETE", f"/api/v1/endpoints/{args.name}")
    else:
        rows = c.request("GET", "/api/v1/endpoints")["endpoints"]
        _table(rows, ["name", "handler", "gpus", "minReplicas", "maxReplicas", "priority", "concurrency"])
        return 0
    print(json.dumps(out, indent=2))
    return 0


def _warn_if_never_fits(c: Any, endpoint: dict[str, Any]) -> None:
    """Warn (on stderr; the endpoint is created all the same) when its replicas' GPUs can never fit the
    cluster: more GPUs per replica than any node has, or types no node offers, and no room to grow."""
    from orchestrator.core.wait_reason import never_fits

    if not endpoint.get("handler") or not float(endpoint.get("gpus") or 0.0):
        return
    try:
        nodes = c.request("GET", "/api/v1/specs")["specs"]
        max_gpus = c.request("GET", "/api/v1/autoscaler/status").get("gpus", {}).get("maxGpus")
    except (RippleError, httpx.HTTPError, KeyError, TypeError):
        log.debug("cluster facts unavailable: no fit check", exc_info=True)
        return
    why = never_fits(float(endpoint["gpus"]), endpoint.get("gpuTypes"), nodes, max_gpus)
    if why:
        sys.stderr.write(
            f"warning: endpoint {endpoint.get('name')!r} {why}: its jobs will wait (waitReason no_gpu) "
            "until the cluster offers it\n"
        )


def _json_flag(flag: str, text: str) -> Any:
    """The JSON value of a flag; a value that is not JSON exits 2 naming the flag and why."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"ripple: {flag} is not valid JSON ({exc})", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_submit(args: argparse.Namespace) -> int:
    from orchestrator.batch import read_inputs
    from orchestrator.core.jobs import input_of

    if args.input is None:
        inputs = read_inputs(Path(args.file))  # each line an input, or a job with one
    else:
        inputs = [input_of(_json_flag("--input", args.input))]
    c = _client(args)
    ids = (
        c.submit_many(args.endpoint, inputs, chunk=1000)
        if len(inputs) > 1
        else [c.submit(args.endpoint, inputs[0])]
    )
    if not args.wait:
        for job_id in ids:
            print(job_id)
        return 0
    from orchestrator.cli.waiting import WaitDisplay

    results = []
    display = WaitDisplay(sys.stderr, live=sys.stderr.isatty())
    for n, job_id in enumerate(ids, 1):
        results.append(
            c.result(job_id, timeout_s=args.timeout, endpoint=args.endpoint, on_status=display.update)
        )
        display.clear()
        _progress(n, len(ids))
    lines = "".join(json.dumps(r) + "\n" for r in results)
    if args.out:
        Path(args.out).write_text(lines)
    else:
        sys.stdout.write(lines)
    return 0 if all(r["status"] == "COMPLETED" for r in results) else 2


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        width = 30
        fill = int(width * done / total)
        sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def cmd_autoscaler(args: argparse.Namespace) -> int:
    """Autoscaler switch, status, decision history and per-endpoint overrides."""
    c = _client(args)
    if args.action == "status":
        out = c.request("GET", "/api/v1/autoscaler/status")
        print(
            f"autoscaler: {'on' if out['enabled'] else 'OFF'}   GPUs used {out['gpus']['used']:g} / "
            f"{out['gpus']['total']:g} (free {out['gpus']['free']:g})"
        )
        _table(
            out["endpoints"],
            [
                "endpoint",
                "current",
                "desired",
                "queued",
                "running",
                "priority",
                "effectivePriority",
                "waitingS",
                "idleS",
                "blocked",
            ],
        )
        return 0
    if args.action in ("enable", "disable"):
        out = c.request("POST", f"/api/v1/autoscaler/{args.action}")
    elif args.action == "history":
        if not args.endpoint:
            raise SystemExit("ripple autoscaler history: ENDPOINT is required")
        rows = c.request("GET", f"/api/v1/autoscaler/history/{args.endpoint}?limit={args.limit}")["history"]
        for row in rows:
            print(
                f"{row['at']}  {row['kind']:<10} "
                f"{row.get('count', row.get('replica_ids', ''))!s:<12} {row['reason']}"
            )
        return 0
    else:
        if not args.endpoint:
            raise SystemExit("ripple autoscaler override: ENDPOINT is required")
        if args.clear:
            out = c.request("DELETE", f"/api/v1/autoscaler/overrides/{args.endpoint}")
        else:
            body = {"desiredReplicas": args.replicas, "disabled": bool(args.off)}
            out = c.request("PUT", f"/api/v1/autoscaler/overrides/{args.endpoint}", json=body)
    print(json.dumps(out, indent=2))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.cli.status import render_status

    c, state = _connect(args)
    try:
        text = render_status(c, color=sys.stdout.isatty(), direct_url=state.direct_url if state else None)
    except NotReady as exc:
        print(f"ripple: {exc}{_default_url_note(args)}", file=sys.stderr)
        return 1
    print(text)
    return 0


def _default_url_note(args: argparse.Namespace) -> str:
    """Where the URL came from, when no instance is recorded in the data dir and none was given: nothing
    may answer there, or an instance of another data dir (which refuses this one's key)."""
    if args.url or os.environ.get("RIPPLE_URL"):
        return ""
    try:
        data_dir = _settings(args).data_dir.resolve()
    except ConfigError:
        return ""
    if local.read_state(data_dir) is not None:
        return ""
    return (
        f" (no instance is recorded in {data_dir}, so this asked the default URL: choose one with "
        "--data-dir or --url)"
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from orchestrator.ops.doctor.report import run_doctor

    return run_doctor(args, _settings(args))


# Parser ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ripple", description="Serverless GPU job orchestrator on Ray.")
    p.add_argument("--config", help="YAML settings file (also RIPPLE_CONFIG).")
    p.add_argument("--data-dir", help="Data dir (default .ripple; RIPPLE_DATA_DIR).")
    p.add_argument("--url", help="Base URL of a running instance (RIPPLE_URL).")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Start Ripple on this machine.")
    up.add_argument("--host")
    up.add_argument("--port", type=int)
    up.add_argument("--redis-url", help="External Redis (RIPPLE_REDIS_URL); default: embedded.")
    up.add_argument("--num-gpus", type=float, help="Declare logical GPUs on the local Ray head.")
    up.add_argument(
        "--gpus",
        metavar="TYPE=N[,TYPE=N...]",
        help="Declare typed logical GPUs on the local Ray head, e.g. A100=1,L4=1 (not with --num-gpus).",
    )
    up.add_argument("--num-cpus", type=float, help="CPUs the local Ray head offers.")
    up.add_argument("--insecure", action="store_true", help="Turn authentication off (local experiments).")
    up.add_argument("--detach", action="store_true", help="Return once ready; stop with `ripple down`.")
    up.set_defaults(fn=cmd_up)

    sub.add_parser("down", help="Gracefully stop a detached instance.").set_defaults(fn=cmd_down)

    ep = sub.add_parser("endpoint", help="Manage endpoints.")
    ep.add_argument("action", choices=["create", "list", "show", "update", "delete"])
    ep.add_argument("name", nargs="?")
    for flag in ENDPOINT_FLAGS:
        ep.add_argument("--" + flag.replace("_", "-"), dest=flag, type=ENDPOINT_FLAGS[flag][1])
    ep.add_argument("--runtime-env", help="Ray runtime_env as JSON.")
    ep.add_argument("--set", action="append", metavar="FIELD=VALUE", help="Any endpoint field (JSON value).")
    ep.set_defaults(fn=cmd_endpoint)

    deploy.add_parsers(sub, _client, lambda a: int(_settings(a).max_package_bytes))

    sm = sub.add_parser("submit", help="Submit one job or a file of jobs.")
    sm.add_argument("endpoint")
    src = sm.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="The job input as JSON.")
    src.add_argument("--file", help='A JSONL file, one input (or {"input": ...}) per line.')
    sm.add_argument("--wait", action="store_true")
    sm.add_argument("--timeout", type=float, default=600.0)
    sm.add_argument("--out", help="Write results (JSONL) here.")
    sm.set_defaults(fn=cmd_submit)

    sub.add_parser("status", help="One screen: endpoints, queues, workers, GPUs.").set_defaults(fn=cmd_status)

    au = sub.add_parser("autoscaler", help="Autoscaler status, switch, history and overrides.")
    au.add_argument("action", choices=["status", "enable", "disable", "history", "override"])
    au.add_argument("endpoint", nargs="?")
    au.add_argument("--limit", type=int, default=20)
    au.add_argument("--replicas", type=int, help="override: pin this many replicas")
    au.add_argument("--off", action="store_true", help="override: leave this endpoint alone")
    au.add_argument("--clear", action="store_true", help="override: remove the override")
    au.set_defaults(fn=cmd_autoscaler)

    add_logs_parser(sub, _client)
    keys_cli.add_parser(sub, _client)

    dr = sub.add_parser("doctor", help="Diagnose the instance.")
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--save-report")
    dr.add_argument("--include-sensitive", action="store_true")
    dr.set_defaults(fn=cmd_doctor)
    for command in sub.choices.values():
        # Also accepted after the command (`ripple up --data-dir D`); SUPPRESS keeps a value given before it.
        command.add_argument("--data-dir", default=argparse.SUPPRESS, help="Data dir (RIPPLE_DATA_DIR).")
        command.add_argument("--config", default=argparse.SUPPRESS, help="YAML settings file.")
        command.add_argument("--url", default=argparse.SUPPRESS, help="Base URL of a running instance.")
    return p


def _where(exc: httpx.TransportError) -> str:
    try:
        return f" at {exc.request.url}"
    except RuntimeError:  # raised when the error carries no request
        return ""


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from orchestrator.logs import configure

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Ripple's own lines: JSON when not on a TTY. The settings accept any case and report a bad value
    # by name, so a value logging does not know must not crash here first.
    level = os.environ.get("RIPPLE_LOG_LEVEL", "WARNING").upper()
    configure(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING")
    if args.command == "endpoint" and args.action != "list" and not args.name:
        print("ripple endpoint: NAME is required", file=sys.stderr)
        return 2
    try:
        return int(args.fn(args))
    except ConfigError as exc:
        print(f"ripple: configuration error: {exc}", file=sys.stderr)
        return 2
    except RippleError as exc:
        # A 422's message names each field and why, a 404's what is missing: their detail only repeats it
        repeats = isinstance(exc, InvalidInput | NotFound)
        detail = f" {json.dumps(exc.detail)}" if exc.detail and not repeats else ""
        note = _default_url_note(args) if isinstance(exc, Unauthorized) and args.command != "up" else ""
        print(f"ripple: {exc}{detail}{note}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:  # no instance there: say so rather than print a traceback
        hint = _default_url_note(args) or " (is it up? see --url / --data-dir)"
        print(f"ripple: cannot reach Ripple{_where(exc)}: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
