"""Every Redis key Ripple uses, in one place, for Python and for the Lua scripts alike.

Each name is a template relative to the instance's prefix (``RIPPLE_KEY_PREFIX``, default ``ripple:``):

| template | type | contents |
| --- | --- | --- |
| ``job:{id}`` | hash | one job: ep, status, input, output, error, webhook, times, attempts, policy |
| ``hist:{id}`` | list | attempt history, JSON entries ``{at, from, to, reason, worker}`` (last 50) |
| ``stream:{id}`` | list | stream chunks (JSON); the job hash's ``stream_read`` is the client cursor |
| ``q:{ep}`` | zset | queued job ids of an endpoint, scored normal before low priority, FIFO within |
| ``counts:{ep}`` | hash | counters: in_progress, completed, failed, timed_out, cancelled, retried |
| ``leases`` | zset | in-progress job ids scored by their execution deadline (ms) |
| ``ttl`` | zset | queued job ids scored by the time they expire in the queue (ms) |
| ``jobs`` | zset | every job id scored by creation time (ms), for listings |
| ``seq`` | string | the sequence that orders the queues |
| ``endpoints`` | hash | endpoint name to its spec (JSON) |
| ``workers`` | hash | worker id to its last known record (JSON) |
| ``draining`` | set | worker ids refused by ``take`` (checked inside the same script that hands out jobs) |
| ``webhooks`` / ``webhooks:inflight`` | list | job ids whose final status is still to be POSTed |
| ``autoscaler:*`` | | autoscaler state, history per endpoint, leader lease, switch, overrides |
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATES: dict[str, str] = {
    "job": "job:{}",
    "hist": "hist:{}",
    "stream": "stream:{}",
    "queue": "q:{}",
    "counts": "counts:{}",
}
SINGLETONS: dict[str, str] = {
    "leases": "leases",
    "ttl": "ttl",
    "jobs": "jobs",
    "seq": "seq",
    "endpoints": "endpoints",
    "workers": "workers",
    "draining": "draining",
    "webhooks": "webhooks",
    "webhooks_inflight": "webhooks:inflight",
    "autoscaler_state": "autoscaler:state",
    "autoscaler_leader": "autoscaler:leader",
    "autoscaler_enabled": "autoscaler:enabled",
    "autoscaler_overrides": "autoscaler:overrides",
}


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "ripple:"

    def job(self, job_id: str) -> str:
        return self.prefix + TEMPLATES["job"].format(job_id)

    def hist(self, job_id: str) -> str:
        return self.prefix + TEMPLATES["hist"].format(job_id)

    def stream(self, job_id: str) -> str:
        return self.prefix + TEMPLATES["stream"].format(job_id)

    def queue(self, endpoint: str) -> str:
        return self.prefix + TEMPLATES["queue"].format(endpoint)

    def counts(self, endpoint: str) -> str:
        return self.prefix + TEMPLATES["counts"].format(endpoint)

    def autoscaler_history(self, endpoint: str) -> str:
        return f"{self.prefix}autoscaler:history:{endpoint}"

    def __getattr__(self, name: str) -> str:
        if name in SINGLETONS:
            return self.prefix + SINGLETONS[name]
        raise AttributeError(name)


def lua_prelude() -> str:
    """Lua helpers that build the same key names from ``P`` (the prefix, always ``ARGV[1]``)."""
    lines = ["local P = ARGV[1]"]
    for name, template in TEMPLATES.items():
        head, _, tail = template.partition("{}")
        lines.append(f"local function K_{name}(x) return P .. '{head}' .. x .. '{tail}' end")
    for name, suffix in SINGLETONS.items():
        lines.append(f"local K_{name} = P .. '{suffix}'")
    return "\n".join(lines) + "\n"
