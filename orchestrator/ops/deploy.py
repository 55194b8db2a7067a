"""``python -m orchestrator deploy``: deploy or update Ripple on the Ray cluster this process runs in.

Meant for ``ray job submit --address http://HEAD:8265 --working-dir . -- python -m orchestrator deploy``:
the entrypoint runs on the head, connects to its cluster, resolves the store (``RIPPLE_REDIS_URL``, else the
embedded Redis in the data dir, which defaults to ``~/.ripple`` here because a job's working dir is
temporary), creates the control actors if missing and (re)deploys the Serve app. Running it twice changes
nothing but the app's code and settings.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m orchestrator", description="Deploy Ripple onto this Ray cluster."
    )
    p.add_argument("command", choices=["deploy"])
    p.add_argument("--config", help="YAML settings file (also RIPPLE_CONFIG).")
    p.add_argument("--data-dir", help="Data dir on the head (default ~/.ripple; RIPPLE_DATA_DIR).")
    p.add_argument("--host", default=None, help="Serve HTTP host (default 0.0.0.0 on a cluster).")
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--insecure", action="store_true")
    args = p.parse_args(argv)

    import ray

    from actors.bootstrap import ensure_control_actors
    from orchestrator.auth import auth_config, load_or_create_keys
    from orchestrator.boot import boot_config
    from orchestrator.config import load_settings
    from orchestrator.core.errors import RippleError
    from orchestrator.ops import instance

    data_dir = args.data_dir or os.environ.get("RIPPLE_DATA_DIR") or str(Path.home() / ".ripple")
    try:
        settings = load_settings(
            args.config,
            data_dir=data_dir,
            host=args.host or os.environ.get("RIPPLE_HOST") or "0.0.0.0",
            port=args.port,
            insecure=True if args.insecure else None,
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        keys = load_or_create_keys(settings, create=not settings.insecure)
        ray.init(
            address=os.environ.get("RAY_ADDRESS", "auto"),
            namespace=settings.namespace,
            logging_level=logging.WARNING,
        )
        store_url, embedded = instance.resolve_store(settings, detach=True, check=True)
        boot = boot_config(settings, store_url, embedded, auth_config(settings, keys))
        ensure_control_actors(boot)
        url = instance.deploy_serve(boot, settings)
    except RippleError as exc:
        print(f"deploy failed: {exc}")
        return 1
    print(
        f"Ripple deployed: {url} "
        f"(store: {'embedded in ' + str(settings.data_dir) if embedded else 'external'})"
    )
    if keys.generated:
        print(f"New keys were generated and stored in {keys.path} on the head node (mode 0600).")
    return 0
