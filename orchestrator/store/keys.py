"""Every Redis key Ripple uses, in one place, for Python and for the Lua scripts alike.

:class:`Keys` is the single source: each key is an explicit attribute (a property for a singleton, a method
for a key per job or endpoint), so a misspelt name fails type-checking, and :func:`lua_prelude` renders the
same names for the Lua scripts from the class itself. Names are relative to the instance's prefix
(``RIPPLE_KEY_PREFIX``, default ``ripple:``):

| key | type | contents |
| --- | --- | --- |
| ``job:{id}`` | hash | one job: ep, status, input, output, error, webhook, times, attempts, policy, version |
| ``hist:{id}`` | list | attempt history, JSON entries ``{at, from, to, reason, worker}`` (last 50) |
| ``stream:{id}`` | list | stream chunks (JSON); the job hash's ``stream_read`` is the client cursor |
| ``fin:{id}`` | list | a watched job's end, pushed by the step making it final ('': refused); expires |
| ``q:{ep}`` | zset | queued job ids of an endpoint, scored normal before low priority, FIFO within |
| ``wake:{ep}`` | list | a token per job queued (a few at most): replicas taking from the store block on it |
| ``parked:{ep}`` | list | ids of the endpoint's replicas waiting for a job, longest first (SUBMIT hands) |
| ``inbox:{worker}`` | list | jobs handed to a parked replica: ``id\\nattempts\\ninput`` ('' if large) |
| ``fence:{worker}`` | string | a replica's fence, raised by each redelivery: older takes are refused |
| ``taken:{worker}`` | string | the worker's last take that handed out jobs: its id, then theirs (spaced) |
| ``reply:{call}`` | string | a MOVE, SWEEP, PURGE or WEBHOOK_CLAIM call's reply (JSON) if it did something |
| ``counts:{ep}`` | hash | counters: in_progress, completed, failed, timed_out, cancelled, retried |
| ``leases`` | zset | in-progress job ids scored by their execution deadline (ms) |
| ``ttl`` | zset | queued job ids scored by the time they expire in the queue (ms) |
| ``jobs`` | zset | job ids scored by creation time (ms), for listings; ids of deleted jobs trimmed |
| ``keep_results`` | string | how long a finished job is kept (ms; 0: for ever), written by the queue |
| ``seq`` | string | the sequence that orders the queues |
| ``endpoints`` | hash | endpoint name to its spec (JSON) |
| ``versions:{ep}`` | hash | an endpoint's versions: number to the version (JSON, ``core.versions``) |
| ``packages`` | hash | code package URI to when it last arrived (ms, ``core.package_retention``) |
| ``workers`` | hash | worker id to its last known record (JSON) |
| ``draining`` | set | worker ids refused by ``take`` (checked inside the same script that hands out jobs) |
| ``parked`` | hash | a parked replica's id to ``version|endpoint`` (its version is recorded on its jobs) |
| ``webhooks`` / ``webhooks:inflight`` | list | job ids whose final status is still to be POSTed |
| ``webhooks:outcomes:{ep}`` | list | its latest webhook delivery outcomes, oldest first (JSON) |
| ``autoscaler:state`` | string | the autoscaling policy's memory (JSON) |
| ``autoscaler:leader`` | string | the leadership lease: the holding instance's id, with a TTL |
| ``autoscaler:enabled`` | string | the operator's switch, ``1`` or ``0`` (absent: the setting decides) |
| ``autoscaler:overrides`` | hash | endpoint name to an operator override (JSON) |
| ``autoscaler:history:{ep}`` | list | the autoscaler's decisions for an endpoint, newest first (JSON) |
| ``apikeys`` | hash | named API key to its record (JSON: scope, endpoints, created, SHA-256 digest) |
| ``apikeys:version`` | string | counter bumped by every key creation and revocation (replicas poll it) |
| ``apikeys:used`` | hash | named API key to when it was last used (ms, reported by the HTTP replicas) |
| ``audit`` | list | management changes, newest first (JSON), capped |
"""

from __future__ import annotations

from dataclasses import dataclass

_MARK = "\x00"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Add a key here and the Lua scripts get ``K_<name>`` for it."""

    prefix: str = "ripple:"

    # Keys of one job or one endpoint --------------------------------------------------------------

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def hist(self, job_id: str) -> str:
        return f"{self.prefix}hist:{job_id}"

    def stream(self, job_id: str) -> str:
        return f"{self.prefix}stream:{job_id}"

    def fin(self, job_id: str) -> str:
        return f"{self.prefix}fin:{job_id}"

    def queue(self, endpoint: str) -> str:
        return f"{self.prefix}q:{endpoint}"

    def wake(self, endpoint: str) -> str:
        return f"{self.prefix}wake:{endpoint}"

    def parked(self, endpoint: str) -> str:
        return f"{self.prefix}parked:{endpoint}"

    def inbox(self, worker_id: str) -> str:
        return f"{self.prefix}inbox:{worker_id}"

    def fence(self, worker_id: str) -> str:
        return f"{self.prefix}fence:{worker_id}"

    def taken(self, worker_id: str) -> str:
        return f"{self.prefix}taken:{worker_id}"

    def reply(self, call_id: str) -> str:
        return f"{self.prefix}reply:{call_id}"

    def counts(self, endpoint: str) -> str:
        return f"{self.prefix}counts:{endpoint}"

    def versions(self, endpoint: str) -> str:
        return f"{self.prefix}versions:{endpoint}"

    def webhook_outcomes(self, endpoint: str) -> str:
        return f"{self.prefix}webhooks:outcomes:{endpoint}"

    def autoscaler_history(self, endpoint: str) -> str:
        return f"{self.prefix}autoscaler:history:{endpoint}"

    # One key per instance -------------------------------------------------------------------------

    @property
    def leases(self) -> str:
        return f"{self.prefix}leases"

    @property
    def ttl(self) -> str:
        return f"{self.prefix}ttl"

    @property
    def jobs(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def keep_results(self) -> str:
        return f"{self.prefix}keep_results"

    @property
    def seq(self) -> str:
        return f"{self.prefix}seq"

    @property
    def endpoints(self) -> str:
        return f"{self.prefix}endpoints"

    @property
    def packages(self) -> str:
        return f"{self.prefix}packages"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    @property
    def draining(self) -> str:
        return f"{self.prefix}draining"

    @property
    def parked_at(self) -> str:
        return f"{self.prefix}parked"

    @property
    def webhooks(self) -> str:
        return f"{self.prefix}webhooks"

    @property
    def webhooks_inflight(self) -> str:
        return f"{self.prefix}webhooks:inflight"

    @property
    def autoscaler_state(self) -> str:
        return f"{self.prefix}autoscaler:state"

    @property
    def autoscaler_leader(self) -> str:
        return f"{self.prefix}autoscaler:leader"

    @property
    def autoscaler_enabled(self) -> str:
        return f"{self.prefix}autoscaler:enabled"

    @property
    def autoscaler_overrides(self) -> str:
        return f"{self.prefix}autoscaler:overrides"

    @property
    def api_keys(self) -> str:
        return f"{self.prefix}apikeys"

    @property
    def api_keys_version(self) -> str:
        return f"{self.prefix}apikeys:version"

    @property
    def api_keys_used(self) -> str:
        return f"{self.prefix}apikeys:used"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"


def key_names() -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Every key of :class:`Keys` without a prefix: ``(singletons, templates)``.

    ``singletons`` maps a property's name to its key; ``templates`` maps a method's name to the
    ``(head, tail)`` around its argument.
    """
    bare = Keys("")
    singletons: dict[str, str] = {}
    templates: dict[str, tuple[str, str]] = {}
    for name, member in vars(Keys).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            singletons[name] = getattr(bare, name)
        elif callable(member):
            head, mark, tail = getattr(bare, name)(_MARK).partition(_MARK)
            if not mark:
                raise ValueError(f"Keys.{name} does not use its argument")
            templates[name] = (head, tail)
    return singletons, templates


def lua_prelude() -> str:
    """Lua helpers that build the same key names from ``P`` (the prefix, always ``ARGV[1]``): ``K_<name>``
    for each singleton, ``K_<name>(x)`` for each per-job or per-endpoint key."""
    singletons, templates = key_names()
    lines = ["local P = ARGV[1]"]
    for name, (head, tail) in templates.items():
        lines.append(f"local function K_{name}(x) return P .. {_lua_str(head)} .. x .. {_lua_str(tail)} end")
    for name, key in singletons.items():
        lines.append(f"local K_{name} = P .. {_lua_str(key)}")
    return "\n".join(lines) + "\n"


def _lua_str(text: str) -> str:
    if any(c in text for c in "'\\\n"):
        raise ValueError(f"key text {text!r} needs escaping in Lua")
    return f"'{text}'"
