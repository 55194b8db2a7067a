"""``ripple keys create|list|revoke``: named API keys over HTTP (``/api/v1/keys``), with an admin key.

``create`` prints the key once (it is stored only as a hash: nobody can show it again); ``--json`` prints
the whole reply instead, for scripts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
from collections.abc import Callable
from typing import Any

SCOPES = ("admin", "read", "client", "worker")


def add_parser(sub: Any, make_client: Callable[[argparse.Namespace], Any]) -> None:
    """Register ``ripple keys`` on the CLI's sub-parsers; ``make_client(args)`` is the CLI's HTTP client
    (its URL and key found as for every other command)."""
    ks = sub.add_parser("keys", help="Named API keys: create (shown once), list, revoke.")
    ks.add_argument("action", choices=["create", "list", "revoke"])
    ks.add_argument("name", nargs="?", help="The key's name (create, revoke).")
    ks.add_argument("--scope", choices=SCOPES, help="create: what the key may do.")
    ks.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME",
        help="create: limit a client or worker key to this endpoint (repeatable; default: all).",
    )
    ks.add_argument("--json", action="store_true", help="Print the reply as JSON.")
    ks.set_defaults(fn=functools.partial(cmd_keys, make_client=make_client))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols).rstrip())


def cmd_keys(args: argparse.Namespace, make_client: Callable[[argparse.Namespace], Any]) -> int:
    if args.action in ("create", "revoke") and not args.name:
        raise SystemExit(f"ripple keys {args.action}: NAME is required")
    c = make_client(args)
    if args.action == "create":
        if not args.scope:
            raise SystemExit("ripple keys create: --scope is required (admin, read, client or worker)")
        body = {"name": args.name, "scope": args.scope, "endpoints": args.endpoint}
        out = c.request("POST", "/api/v1/keys", json=body)
        if args.json:
            print(json.dumps(out, indent=2))
            return 0
        where = ", ".join(out["endpoints"]) or "all endpoints"
        limited = f" ({where})" if out["scope"] in ("client", "worker") else ""
        print(f"created key '{out['name']}' (scope {out['scope']}{limited}):")
        print(out["key"])
        print("Store it now: it is kept only as a hash and cannot be shown again.")
        return 0
    if args.action == "revoke":
        out = c.request("DELETE", f"/api/v1/keys/{args.name}")
        print(json.dumps(out, indent=2) if args.json else f"revoked key '{out['name']}'")
        return 0
    rows = c.request("GET", "/api/v1/keys")["keys"]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [
        {
            "name": r["name"],
            "scope": r["scope"],
            "endpoints": ",".join(r["endpoints"]) or ("*" if r["scope"] in ("client", "worker") else ""),
            "created": _when(r["createdAt"]),
            "lastUsed": _when(r["lastUsedAt"]),
        }
        for r in rows
    ]
    _table(table, ["name", "scope", "endpoints", "created", "lastUsed"])
    return 0
