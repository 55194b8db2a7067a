"""Doctor rules about the instance itself: reachable, ready, configured, every fact readable."""

from __future__ import annotations

from orchestrator.ops.doctor.facts import Facts, Finding, _f
from orchestrator.store.protocol import STORE_MEMORY_CRITICAL, STORE_MEMORY_HIGH, StoreMemory


def check_reachable(f: Facts, now_s: float) -> list[Finding]:
    if f.reachable:
        return []
    local = f.local
    hint = (
        "a state file says it runs there, so it probably crashed: `ripple down` then `ripple up`"
        if local and local.state_file
        else "start it with `ripple up` (or `ripple up --detach`)"
    )
    return [
        _f(
            "HIGH",
            "configuration",
            "config.unreachable",
            f"Ripple is not reachable at {f.url} ({f.http_error or 'no answer'})",
            f"{hint[0].upper()}{hint[1:]}; or point doctor at the right instance with --url / RIPPLE_URL.",
        )
    ]


def check_ready(f: Facts, now_s: float) -> list[Finding]:
    if not f.reachable or f.ready is not False:
        return []
    local = f.local
    store = (f.info or {}).get("store")
    if local is not None and local.redis_pid is not None and local.redis_alive is False:
        action = (
            f"The embedded Redis (pid {local.redis_pid} in {local.data_dir}/redis.pid) is not running: "
            "restart Ripple with `ripple down` then `ripple up`; acknowledged jobs are kept in ripple.aof."
        )
    elif store == "external":
        action = "Check that the Redis of RIPPLE_REDIS_URL is up and reachable from the Ray head, then retry."
    else:
        action = (
            "The store or the ripple-queue actor does not answer: check the embedded Redis "
            "(redis.log in the data dir) and the queue actor's logs in the Ray dashboard; "
            "`ripple down` then `ripple up` restarts both."
        )
    return [
        _f(
            "HIGH",
            "store",
            "store.unreachable",
            f"Ripple is not ready: the job store (Redis) or the queue does not answer ({f.ready_detail})",
            action,
        )
    ]


def check_config(f: Facts, now_s: float) -> list[Finding]:
    out: list[Finding] = []
    info, local = f.info or {}, f.local
    if info.get("auth") is False:
        out.append(
            _f(
                "MEDIUM",
                "configuration",
                "config.auth_off",
                "Authentication is off (--insecure): anyone who can reach the port can submit and manage",
                "Restart without --insecure before exposing the port beyond this machine.",
            )
        )
    if local is not None:
        if info.get("auth") and not local.api_key_known:
            out.append(
                _f(
                    "HIGH",
                    "configuration",
                    "config.keys_missing",
                    "Auth is on but no API key is available here (RIPPLE_API_KEY unset, no keys.json)",
                    "Set RIPPLE_API_KEY, or run doctor with the instance's --data-dir (its keys.json).",
                )
            )
        if local.keys_mode is not None and local.keys_mode & 0o077:
            out.append(
                _f(
                    "HIGH",
                    "configuration",
                    "config.keys_mode",
                    f"{local.keys_path} is readable by others (mode {local.keys_mode:04o})",
                    f"chmod 600 {local.keys_path}",
                )
            )
        if local.redis_appendonly is False:
            out.append(
                _f(
                    "MEDIUM",
                    "store",
                    "store.not_persistent",
                    "The embedded Redis runs without append-only persistence: a crash loses accepted jobs",
                    f"Set `appendonly yes` in {local.data_dir}/redis.conf (Ripple writes it so) and restart.",
                )
            )
        server_version = info.get("version")
        if server_version and local.client_version and server_version != local.client_version:
            out.append(
                _f(
                    "LOW",
                    "configuration",
                    "config.version_mismatch",
                    f"The CLI is version {local.client_version}, the server {server_version}",
                    "Upgrade the older side so both run the same version.",
                )
            )
    if info.get("store") == "external":
        out.append(
            _f(
                "LOW",
                "store",
                "store.external",
                "The job store is an external Redis: its durability is its own configuration",
                "Make sure it runs with `appendonly yes` and is backed up.",
            )
        )
    return out


def check_store_memory(f: Facts, now_s: float) -> list[Finding]:
    """Redis's memory against its ``maxmemory``: near it, new jobs are about to be refused; an eviction
    policy other than ``noeviction`` lets Redis delete Ripple's keys to make room."""
    m = StoreMemory.from_wire(f.store_memory)
    if m is None or m.share is None:
        return []  # no limit: Redis takes what the machine has
    used, limit, policy, share = m.used_bytes, m.max_bytes, m.policy, m.share
    out: list[Finding] = []
    if policy.startswith("allkeys"):
        out.append(
            _f(
                "HIGH",
                "store",
                "store.evicts_jobs",
                f"The job store's Redis evicts any key when full (maxmemory-policy {policy}): queued jobs, "
                "endpoints and results can vanish without a trace",
                "Set `maxmemory-policy noeviction` on that Redis: full, it then refuses new jobs (a 503 "
                "that says so) and loses nothing.",
                {"policy": policy},
            )
        )
    elif policy != "noeviction":
        out.append(
            _f(
                "MEDIUM",
                "store",
                "store.evicts_results",
                f"The job store's Redis evicts keys with an expiry when full (maxmemory-policy {policy}): "
                "finished jobs' results before RIPPLE_KEEP_RESULTS_S, and jobs being handed to replicas "
                "(run later, once their lease runs out)",
                "Set `maxmemory-policy noeviction` on that Redis.",
                {"policy": policy},
            )
        )
    if share >= STORE_MEMORY_HIGH:
        mib = 1024 * 1024
        out.append(
            _f(
                "HIGH" if share >= STORE_MEMORY_CRITICAL else "MEDIUM",
                "store",
                "store.memory_full" if share >= 1 else "store.memory_high",
                (
                    f"The job store's Redis is full ({used / mib:.0f} MiB used, its maxmemory "
                    f"{limit / mib:.0f} MiB): no job can be queued (503)"
                    if share >= 1
                    else f"The job store's Redis uses {used / mib:.0f} MiB of its {limit / mib:.0f} MiB "
                    f"maxmemory ({share:.0%}): when full, no job can be queued (503)"
                ),
                "Give Redis more memory (maxmemory), or keep finished jobs less long "
                "(RIPPLE_KEEP_RESULTS_S): it holds about jobs per second x seconds kept x each job's input "
                "and output.",
                {"usedBytes": used, "maxBytes": limit},
            )
        )
    return out


def check_unavailable(f: Facts, now_s: float) -> list[Finding]:
    """Facts the app could not give although it answers (an actor down, a route failing)."""
    if not f.reachable or f.ready is False:
        return []
    if any(why.startswith("401") for why in f.errors.values()):
        return [
            _f(
                "HIGH",
                "configuration",
                "config.unauthorized",
                "Ripple refused this CLI's API key (401)",
                "Use the instance's key: run doctor with its --data-dir (keys.json) or set RIPPLE_API_KEY.",
            )
        ]
    return [
        _f(
            "HIGH" if what in ("autoscaler", "workers", "stats") else "MEDIUM",
            "autoscaler" if what == "autoscaler" else "store",
            f"facts.{what}",
            f"Could not read {what} from Ripple: {why}",
            "Check the ripple-queue / ripple-autoscaler actors in the Ray dashboard (`ray list actors`);"
            " they restart on their own, `ripple down` then `ripple up` restarts everything.",
        )
        for what, why in sorted(f.errors.items())
        if what != "cluster"
    ]
