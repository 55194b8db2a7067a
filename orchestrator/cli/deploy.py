"""``ripple deploy``, ``ripple versions`` and ``ripple rollback``: code from a folder to an endpoint.

``ripple deploy PATH --endpoint NAME`` zips the folder (:func:`build_package`: ``.gitignore`` files
respected, ``.git``, ``__pycache__``, virtualenvs and caches left out, a size limit), uploads it over the
HTTP API (``POST /api/v1/packages``: the cluster stores it as a content-addressed ``gcs://`` package), then
creates the endpoint or a new version of it with ``runtimeEnv.working_dir`` set to the package,
``runtimeEnv.pip`` to the folder's ``requirements.txt`` (removed when it has none) and ``codeDigest``. It
then follows the rollout until the version is ``active`` (exit 0) or failed, superseded, or the endpoint
reports a problem (exit 1). A laptop needs only the URL and an API key: no Ray client.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pathspec

from orchestrator.core.errors import InvalidInput, NotFound

DEFAULT_EXCLUDES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".venv/",
    "venv/",
    ".env/",
    ".ripple/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "node_modules/",
    ".DS_Store",
)
"""Never packaged, whatever ``.gitignore`` says."""
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed: the same files give the same bytes, so the same package URI
TERMINAL_STATES = ("active", "failed", "retired")


@dataclass(frozen=True)
class Package:
    """A folder zipped for upload: the bytes and what went in."""

    data: bytes
    files: tuple[str, ...]
    has_requirements: bool


def _specs_for(root: Path, rel_dir: str, extra: list[str]) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
    out: list[tuple[str, pathspec.GitIgnoreSpec]] = []
    if rel_dir == "":
        out.append(("", pathspec.GitIgnoreSpec.from_lines([*DEFAULT_EXCLUDES, *extra])))
    ignore = root / rel_dir / ".gitignore"
    if ignore.is_file():
        out.append(
            (rel_dir, pathspec.GitIgnoreSpec.from_lines(ignore.read_text(errors="replace").splitlines()))
        )
    return out


def _ignored(rel: str, is_dir: bool, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> bool:
    """``rel`` (a POSIX path under the root) is excluded by a ``.gitignore`` of a folder above it (a
    deeper file decides over a shallower one when it matches) or by the default excludes."""
    verdict = False
    for base, spec in specs:
        sub = rel[len(base) + 1 :] if base else rel
        candidate = sub + "/" if is_dir else sub
        result = spec.check_file(candidate)
        if result.include is not None:
            verdict = bool(result.include)
    return verdict


def iter_files(root: Path, excludes: list[str] | None = None) -> Iterator[str]:
    """The files of ``root`` to package (POSIX paths relative to it, sorted per folder), skipping what
    ``.gitignore`` files and :data:`DEFAULT_EXCLUDES` (plus ``excludes``, gitignore syntax) leave out.
    Symlinks to files are followed; symlinked folders are not entered."""
    extra = list(excludes or [])

    def walk(rel_dir: str, specs: list[tuple[str, pathspec.GitIgnoreSpec]]) -> Iterator[str]:
        specs = specs + _specs_for(root, rel_dir, extra)
        folder = root / rel_dir
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                if not _ignored(rel, True, specs):
                    yield from walk(rel, specs)
            elif entry.is_file() and not _ignored(rel, False, specs):
                yield rel

    yield from walk("", [])


def build_package(root: Path, max_bytes: int, excludes: list[str] | None = None) -> Package:
    """Zip the folder ``root`` deterministically (sorted names, fixed timestamps, file modes kept).
    Raises InvalidInput when ``root`` is not a folder, has nothing to package, or the zip is over
    ``max_bytes`` (naming the largest files)."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a folder", {"path": str(root)})
    files = tuple(iter_files(root, excludes))
    if not files:
        raise InvalidInput(f"nothing to package in {root} (every file is excluded)", {"path": str(root)})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            path = root / rel
            info = zipfile.ZipInfo(rel, date_time=ZIP_DATE)
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
            if buf.tell() > max_bytes:
                break
    data = buf.getvalue()
    if len(data) > max_bytes:
        largest = sorted(files, key=lambda r: (root / r).stat().st_size, reverse=True)[:5]
        sizes = ", ".join(f"{r} ({_mib((root / r).stat().st_size)})" for r in largest)
        raise InvalidInput(
            f"the package of {root} is over the limit of {_mib(max_bytes)} (largest files: {sizes}); "
            "leave large files out with .gitignore or --exclude, or fetch them at start-up",
            {"path": str(root), "limitBytes": max_bytes},
        )
    return Package(data, files, "requirements.txt" in files)


def syntax_problems(root: Path, files: Sequence[str]) -> list[str]:
    """The packaged Python files (``files``, relative to ``root``) that do not compile with this Python:
    ``PATH, line N: SyntaxError: why`` each. What a replica would fail to import, found before the upload
    (a version whose replicas start only with the first job would show it only then)."""
    problems = []
    for rel in files:
        if not rel.endswith(".py"):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarnings (invalid escapes) are not failures
                compile((root / rel).read_bytes(), rel, "exec", dont_inherit=True)
        except SyntaxError as exc:
            problems.append(f"{rel}, line {exc.lineno}: {type(exc).__name__}: {exc.msg}")
        except ValueError as exc:  # source with null bytes
            problems.append(f"{rel}: {exc}")
    return problems


def _mib(n: float) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


# Commands ------------------------------------------------------------------------------------------------


def _parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"ripple deploy: --set {item!r}: expected FIELD=VALUE")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def deploy_body(
    existing: dict[str, Any] | None,
    pkg: dict[str, Any],
    handler: str | None,
    sets: dict[str, Any],
) -> dict[str, Any]:
    """The endpoint fields a deploy sends: ``runtimeEnv`` (the existing one, or ``--set runtimeEnv``,
    with ``working_dir`` set to the package and ``pip`` to its requirements, or without ``pip`` when it
    has none), ``codeDigest``, ``handler`` when given, and the other ``--set`` fields."""
    body = dict(sets)
    base = body.pop("runtimeEnv", None)
    if base is None:
        base = (existing or {}).get("runtimeEnv") or {}
    env = {k: v for k, v in dict(base).items() if k not in ("working_dir", "pip")}
    env["working_dir"] = pkg["uri"]
    if pkg.get("requirements"):
        env["pip"] = list(pkg["requirements"])
    body["runtimeEnv"] = env
    body["codeDigest"] = pkg["codeDigest"]
    if handler:
        body["handler"] = handler
    return body


def cmd_deploy(args: argparse.Namespace, client: Any, max_bytes: int) -> int:
    root = Path(args.path).expanduser().resolve()
    pkg_local = build_package(root, max_bytes, args.exclude)
    print(f"Packaged {len(pkg_local.files)} files from {root} ({_mib(len(pkg_local.data))})", flush=True)
    if not args.no_check and (problems := syntax_problems(root, pkg_local.files)):
        python = ".".join(str(n) for n in sys.version_info[:2])
        print(
            "ripple deploy: these files do not compile, so the replicas could not import them; nothing "
            f"was uploaded (checked with Python {python}; --no-check deploys anyway):\n  "
            + "\n  ".join(problems),
            file=sys.stderr,
        )
        return 1
    pkg = client.request(
        "POST",
        "/api/v1/packages",
        content=pkg_local.data,
        headers={"Content-Type": "application/zip"},
        timeout=max(60.0, len(pkg_local.data) / (1024 * 1024)),
    )
    note = "already in the cluster" if pkg.get("existed") else "uploaded"
    print(f"Package {pkg['uri']} ({pkg['codeDigest'][:19]}) {note}", flush=True)
    if pkg.get("requirements"):
        print(f"requirements.txt: {len(pkg['requirements'])} packages into runtimeEnv.pip", flush=True)
    name = args.endpoint
    sets = _parse_sets(args.set)
    try:
        existing: dict[str, Any] | None = client.request("GET", f"/api/v1/endpoints/{name}")
    except NotFound:
        existing = None
    handler = args.handler
    if existing is None:
        if not handler and not sets.get("handler"):
            if not (root / "handler.py").is_file():
                raise SystemExit(
                    f"ripple deploy: endpoint {name!r} does not exist; give --handler MODULE[:FUNCTION] "
                    "to create it (or add a handler.py)"
                )
            handler = "handler"
        body = {"name": name, **deploy_body(None, pkg, handler, sets)}
        out = client.request("POST", "/api/v1/endpoints", json=body)
        print(f"Endpoint {name} created: version {out['version']}", flush=True)
    else:
        out = client.request(
            "PATCH", f"/api/v1/endpoints/{name}", json=deploy_body(existing, pkg, handler, sets)
        )
        if out["version"] == existing.get("version"):
            print(f"Endpoint {name}: nothing changed, version {out['version']}", flush=True)
        else:
            print(f"Endpoint {name}: version {out['version']}", flush=True)
    if args.no_wait:
        return 0
    return follow(client, name, int(out["version"]), args.timeout)


def follow(
    client: Any,
    name: str,
    version: int,
    timeout_s: float,
    *,
    poll_s: float = 1.0,
    out: Any = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Show the rollout of ``version`` until it is ``active`` (0), failed, superseded, or the endpoint
    reports that its replicas cannot start (1), or ``timeout_s`` passes (1)."""
    stream = out if out is not None else sys.stdout
    tty = bool(getattr(stream, "isatty", lambda: False)())
    start, since_ms = clock(), int(time.time() * 1000) - 1000
    last_line = ""
    while True:
        versions = client.request("GET", f"/api/v1/endpoints/{name}/versions")["versions"]
        mine = next((v for v in versions if v["version"] == version), None)
        if mine is None:
            print(f"\nversion {version} of {name} is gone", file=stream)
            return 1
        endpoint = client.request("GET", f"/api/v1/endpoints/{name}")
        workers = client.request("GET", f"/api/v1/endpoints/{name}/workers")["workers"]
        line, ready = _progress_line(mine, workers, clock() - start)
        if tty:
            stream.write("\r" + line.ljust(len(last_line)))
            stream.flush()
        elif line != last_line:
            print(line, file=stream, flush=True)
        last_line = line
        verdict = _verdict(name, mine, endpoint, since_ms)
        timed_out = verdict is None and clock() - start > timeout_s
        if verdict is not None or timed_out:
            if tty:
                stream.write("\n")
            if verdict is None:
                verdict = (
                    1,
                    f"Version {version} of {name} is still {mine['state']} after {timeout_s:g} s; "
                    "see `ripple status` and `ripple doctor`",
                )
            print(verdict[1], file=stream)
            if mine["state"] == "active" and not ready:
                print(
                    "No replica runs it yet (none is kept warm): its code loads when the first job starts "
                    "one; `ripple submit` one to try it, or set minReplicas.",
                    file=stream,
                )
            return verdict[0]
        time.sleep(poll_s)


def _verdict(
    name: str, mine: dict[str, Any], endpoint: dict[str, Any], since_ms: int
) -> tuple[int, str] | None:
    """How a followed rollout ended (exit code and message), or None while it goes on."""
    n, state = mine["version"], mine["state"]
    if state == "active":
        return 0, f"Version {n} of {name} is active."
    if state == "failed":
        return 1, f"Version {n} of {name} FAILED: {mine.get('error') or 'no reason given'}"
    if state == "retired":
        return 1, f"Version {n} of {name} was superseded by a newer version."
    problem = endpoint.get("problem")
    if problem and problem.get("code") != "unplaceable" and int(problem.get("at") or since_ms) >= since_ms:
        detail = f"\n{str(problem['detail'])[-1500:]}" if problem.get("detail") else ""
        return 1, f"Version {n} of {name}: replicas cannot start: {problem['message']}{detail}"
    return None


def _progress_line(
    version: dict[str, Any], workers: list[dict[str, Any]], elapsed_s: float
) -> tuple[str, int]:
    """The progress line of a followed rollout, and how many of the version's replicas are ready."""
    live = [w for w in workers if w.get("state") != "stopped"]
    mine = [w for w in live if w.get("version") == version["version"]]
    others = [w for w in live if w.get("version") not in (None, version["version"])]
    ready = sum(1 for w in mine if w.get("state") in ("idle", "busy"))
    starting = sum(1 for w in mine if w.get("state") == "starting")
    parts = [f"version {version['version']} {version['state']}", f"{ready} ready", f"{starting} starting"]
    if others:
        parts.append(f"{len(others)} of older versions")
    return f"[{elapsed_s:5.0f} s] " + ", ".join(parts), ready


def _when(ms: Any) -> str:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return ""


def cmd_versions(args: argparse.Namespace, client: Any) -> int:
    rows = client.request("GET", f"/api/v1/endpoints/{args.name}/versions")["versions"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ["version", "state", "created (UTC)", "handler", "code", "changed", "error"]
    table = [
        {
            "version": v["version"],
            "state": v["state"],
            "created (UTC)": _when(v.get("createdAt")),
            "handler": v.get("handler") or "-",
            "code": "deleted" if v.get("codeDeletedAt") else (v.get("codeDigest") or "-")[:19],
            "changed": ",".join(v.get("changed") or []) or "-",
            "error": (v.get("error") or "")[:80],
        }
        for v in rows
    ]
    widths = {c: max([len(c)] + [len(str(r[c])) for r in table]) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in table:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols).rstrip())
    return 0


def cmd_rollback(args: argparse.Namespace, client: Any) -> int:
    body = {"to": args.to} if args.to is not None else {}
    out = client.request("POST", f"/api/v1/endpoints/{args.name}/rollback", json=body)
    print(
        f"Endpoint {args.name}: rolled back to version {out['rolledBackTo']}'s code "
        f"as version {out['version']}"
    )
    if args.no_wait:
        return 0
    return follow(client, args.name, int(out["version"]), args.timeout)


def add_parsers(
    sub: Any, client: Callable[[argparse.Namespace], Any], max_bytes: Callable[[argparse.Namespace], int]
) -> None:
    """Add ``deploy``, ``versions`` and ``rollback`` to the ``ripple`` parser."""
    dp = sub.add_parser("deploy", help="Package a folder and deploy it to an endpoint (a new version).")
    dp.add_argument("path", help="The folder with the handler code.")
    dp.add_argument("--endpoint", required=True, help="Endpoint name (created when it does not exist).")
    dp.add_argument(
        "--handler", help="MODULE[:FUNCTION] in the folder (default for a new endpoint: handler)."
    )
    dp.add_argument("--set", action="append", metavar="FIELD=VALUE", help="Any endpoint field (JSON value).")
    dp.add_argument("--exclude", action="append", metavar="PATTERN", help="Leave out (gitignore syntax).")
    dp.add_argument("--timeout", type=float, default=900.0, help="Seconds to follow the rollout.")
    dp.add_argument("--no-wait", action="store_true", help="Return once the version is created.")
    dp.add_argument(
        "--no-check", action="store_true", help="Upload even Python files that do not compile here."
    )
    dp.set_defaults(fn=lambda a: cmd_deploy(a, client(a), max_bytes(a)))

    vs = sub.add_parser("versions", help="The versions of an endpoint.")
    vs.add_argument("name")
    vs.add_argument("--json", action="store_true")
    vs.set_defaults(fn=lambda a: cmd_versions(a, client(a)))

    rb = sub.add_parser("rollback", help="Roll an endpoint back to an earlier version (as a new version).")
    rb.add_argument("name")
    rb.add_argument("--to", type=int, help="The version to return to (default: the previous good one).")
    rb.add_argument("--timeout", type=float, default=900.0)
    rb.add_argument("--no-wait", action="store_true")
    rb.set_defaults(fn=lambda a: cmd_rollback(a, client(a)))
