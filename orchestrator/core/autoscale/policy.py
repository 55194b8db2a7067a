"""``decide(snapshot, state) -> (decisions, state)``: the whole autoscaling policy, as a pure function.

One call, in order:

1. fold the snapshot into each endpoint's memory (arrivals, quiet and waiting clocks);
2. scale down: idle replicas past their keep-alive, with an empty queue, past the cooldown, never below
   ``min_replicas`` (above a pinned size or ``max_replicas``: at once);
3. collect wants in phases: (0) one replica for every endpoint with queued work and none at all,
   (1) ``min_replicas`` (or a pinned size), (2) the rest of the work, ``ceil((queued + running) /
   concurrency)`` capped at ``max_replicas``, when the queue reached ``scale_up_threshold`` (or its oldest
   job waited one starvation step) past ``scale_up_cooldown_s``, (3) learned pre-warms;
4. grant them phase by phase, by effective priority within a phase, from the GPUs (and CPU/memory caps)
   left after every listed replica, expected replica and planned start; a want that does not fit is
   ``Blocked`` and may preempt: GPUs already draining are claimed first, then idle replicas (busy ones with
   ``preempt_busy``) of endpoints of lower effective priority above ``max(min_replicas, pinned size, 1 if
   work)``, and, for an endpoint with no replica whose job waited ``starvation_reclaim_after_s``, one
   replica of the endpoint holding the most. An endpoint preempted wants the replicas it lost back within
   the same call (:meth:`_Wants.add_lost`), so the cascade does not wait for a second call.

Replicas still starting, and ones asked for but not yet listed (for ``EXPECTATION_TTL_S``), count as
capacity and as GPUs in use, so a slow start or a second call on the same snapshot never scales twice. The
expectation drops by every replica a call drains (scale-down or preemption): a drained replica leaves the
listing for good, and would otherwise stay counted as phantom capacity holding GPUs nobody holds. Memory is
kept only for the endpoints in the snapshot: one that disappears and comes back starts afresh.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import replace

from orchestrator.core.autoscale.endpoint_plan import (
    EndpointPlan,
    keep_alive_plan,
    observe,
    prewarm_wanted,
    scale_down,
)
from orchestrator.core.autoscale.keepalive import KeepAlivePlan
from orchestrator.core.autoscale.model import (
    AutoscaleConfig,
    AutoscalerState,
    Blocked,
    Decision,
    Drain,
    EndpointMemory,
    Prewarm,
    ReplicaView,
    ScaleUp,
    Snapshot,
)

_EPS = 1e-9
_Want = tuple[EndpointPlan, int, str]


class _Budget:
    """Resources left for new replicas (``None``: no cap on that resource).

    ``gpus`` is the cluster-wide figure; ``typed`` the free GPUs of each type and ``growth`` the GPUs the
    cluster may still add (of any type). A typed endpoint fits within both the cluster-wide figure and its
    types' (plus growth); an untyped one within the cluster-wide figure only.
    """

    def __init__(self, snapshot: Snapshot, plans: list[EndpointPlan]) -> None:
        gpu_cap = snapshot.gpus_total - snapshot.gpus_used_elsewhere
        if snapshot.max_gpus is not None:
            gpu_cap = min(gpu_cap, snapshot.max_gpus)
        used_g = used_c = used_m = 0.0
        self.draining_g: dict[str | None, float] = {}
        self.claimed: dict[str, dict[str | None, float]] = {}  # preemptor -> GPUs by type it waits for
        typed = {
            t: n - snapshot.gpus_used_elsewhere_by_type.get(t, 0.0) for t, n in snapshot.gpus_by_type.items()
        }
        for p in plans:
            n = len(p.view.replicas) + p.expected
            used_g += n * p.view.gpus_per_replica
            used_c += n * p.view.cpus_per_replica
            used_m += n * p.view.memory_mb_per_replica
            for r in p.view.replicas:
                if r.gpu_type is not None:
                    typed[r.gpu_type] = typed.get(r.gpu_type, 0.0) - p.view.gpus_per_replica
        # Replicas beyond a type's GPUs wait for nodes the cluster may add: they hold growth.
        self.growth = max(0.0, snapshot.gpus_growth - sum(-v for v in typed.values() if v < 0))
        self.typed = {t: max(0.0, v) for t, v in typed.items()}
        self.offered = {t for t, n in snapshot.gpus_by_type.items() if n > _EPS}
        self.gpus = gpu_cap - used_g
        self.cpus = None if snapshot.cpus_total is None else snapshot.cpus_total - used_c
        self.memory_mb = None if snapshot.memory_mb_total is None else snapshot.memory_mb_total - used_m
        for p in plans:  # replicas asked for but not listed yet hold GPUs of the types they will get
            if p.expected and p.view.gpu_types is not None:
                self._take_typed(p, p.expected)

    def note_draining(self, p: EndpointPlan) -> None:
        """Count ``p``'s draining replicas (and those it drains now) as GPUs soon free, by type."""
        drained = set(p.drain_ids)
        gpr = p.view.gpus_per_replica
        for r in p.view.replicas:
            claimant = p.leaving.get(r.id)
            if claimant:  # preempted for an endpoint by an earlier call: its GPUs stay that endpoint's
                pool = self.claimed.setdefault(claimant, {})
                pool[r.gpu_type] = pool.get(r.gpu_type, 0.0) + gpr
            elif r.state == "draining" or r.id in drained or claimant is not None:
                self.draining_g[r.gpu_type] = self.draining_g.get(r.gpu_type, 0.0) + gpr

    def typed_room(self, p: EndpointPlan) -> int:
        """Replicas of ``p`` its GPU types (and growth) still have room for (``p`` must be typed)."""
        gpr = p.view.gpus_per_replica
        types = p.view.gpu_types or ()
        return sum(int((self.typed.get(t, 0.0) + _EPS) // gpr) for t in types) + int(
            (self.growth + _EPS) // gpr
        )

    def fit(self, p: EndpointPlan, units: int) -> tuple[int, str]:
        """How many of ``units`` replicas fit, and the name of the resource that limits them."""
        v = p.view
        n, limit = units, ""
        for free, per, name in (
            (self.gpus, v.gpus_per_replica, "GPUs"),
            (self.cpus, v.cpus_per_replica, "CPUs"),
            (self.memory_mb, v.memory_mb_per_replica, "memory"),
        ):
            if free is not None and per > 0:
                room = max(0, int((free + _EPS) // per))
                if room < n:
                    n, limit = room, name
        if v.gpu_types is not None and v.gpus_per_replica > 0:
            room = self.typed_room(p)
            if room < n:
                n, limit = room, "GPUs"
        return n, limit

    def take(self, p: EndpointPlan, units: int) -> None:
        v = p.view
        self.gpus -= units * v.gpus_per_replica
        if self.cpus is not None:
            self.cpus -= units * v.cpus_per_replica
        if self.memory_mb is not None:
            self.memory_mb -= units * v.memory_mb_per_replica
        if v.gpu_types is not None:
            for t, k in self._take_typed(p, units).items():
                p.typed_ups[t] = p.typed_ups.get(t, 0) + k

    def _take_typed(self, p: EndpointPlan, units: int) -> dict[str, int]:
        """Take ``units`` replicas' GPUs from ``p``'s types in order of preference, then from growth;
        returns how many each type (``"growth"`` for the rest) gave."""
        gpr = p.view.gpus_per_replica
        out: dict[str, int] = {}
        if gpr <= 0:
            return out
        left = units
        for t in p.view.gpu_types or ():
            k = min(left, int((self.typed.get(t, 0.0) + _EPS) // gpr))
            if k > 0:
                self.typed[t] -= k * gpr
                out[t] = k
                left -= k
        k = min(left, int((self.growth + _EPS) // gpr))
        if k > 0:
            self.growth -= k * gpr
            out["growth"] = k
        return out

    def usable_free(self, p: EndpointPlan) -> float:
        """The GPUs free now that ``p`` could use (of its types, or growth, for a typed endpoint)."""
        free = max(0.0, self.gpus)
        if p.view.gpu_types is None:
            return free
        typed = sum(max(0.0, self.typed.get(t, 0.0)) for t in p.view.gpu_types) + max(0.0, self.growth)
        return min(free, typed)

    def hold_free(self, p: EndpointPlan, need: float) -> float:
        """Set aside up to ``need`` of the GPUs free now that ``p`` could use (its types first, then
        growth, for a typed endpoint); returns how much was set aside."""
        held = max(0.0, min(need, self.gpus))
        if p.view.gpu_types is not None:
            left = held
            for t in p.view.gpu_types:
                c = min(left, self.typed.get(t, 0.0))
                if c > 0:
                    self.typed[t] -= c
                    left -= c
            c = min(left, self.growth)
            self.growth -= c
            held -= left - c
        self.gpus -= held
        return held

    def helps(self, p: EndpointPlan, gpu_type: str | None) -> bool:
        """Whether GPUs of ``gpu_type`` (None: not known) freed by a drain can serve ``p``."""
        types = p.view.gpu_types
        return types is None or (gpu_type is not None and gpu_type in types)

    def never_offered(self, p: EndpointPlan) -> bool:
        """``p`` asks for types no alive node offers, and the cluster cannot grow (no ``maxGpus`` room)."""
        types = p.view.gpu_types
        return types is not None and not any(t in self.offered for t in types) and self.growth <= _EPS


def decide(snapshot: Snapshot, state: AutoscalerState) -> tuple[list[Decision], AutoscalerState]:
    """Decisions for this snapshot and the memory to save before applying them.

    An empty list means "do nothing". ``Blocked`` entries are records, not actions. Deterministic: the
    same snapshot and state give the same result; a second call with the returned state changes nothing
    that the first did not already ask for. With ``snapshot.enabled`` false, only the memory is updated.
    """
    cfg, now_s = snapshot.config, snapshot.now_s
    plans = [
        EndpointPlan(v, observe(v, state.memory(v.name), now_s, cfg), now_s, cfg) for v in snapshot.endpoints
    ]
    if not snapshot.enabled:
        return [], AutoscalerState({p.view.name: p.mem for p in plans})
    budget = _Budget(snapshot, plans)
    live = [p for p in plans if p.view.override is None or not p.view.override.disabled]
    wants = _Wants(cfg, now_s)
    for p in live:
        keep = keep_alive_plan(p, cfg, now_s)
        scale_down(p, keep, now_s)
        budget.note_draining(p)
        wants.collect(p, keep)
    relief = _Relief(live, budget, cfg)
    for phase, group in enumerate(wants.groups):
        group.sort(key=_want_order)
        i = 0
        while i < len(group):  # a preemption below may add its victims' wants to this group
            p, units, why = group[i]
            i += 1
            grant, limit = budget.fit(p, units)
            if grant > 0:
                budget.take(p, grant)
                _grant(p, grant, why, phase)
            if grant < units and phase < 3:
                relief.relieve(p, units - grant, limit, phase)
                wants.add_lost(relief.take_victims(), phase, i)
    return _emit(plans, now_s)


def _grant(p: EndpointPlan, units: int, why: str, phase: int) -> None:
    if phase == 3:
        p.prewarm += units
        p.prewarm_reason = why
    else:
        p.ups += units
        if why not in p.ups_reason:
            p.ups_reason = f"{p.ups_reason}; {why}" if p.ups_reason else why


class _Wants:
    """The wants of one call in its four phases, and the units each endpoint wanted so far in each."""

    def __init__(self, cfg: AutoscaleConfig, now_s: float) -> None:
        self.cfg = cfg
        self.now_s = now_s
        self.groups: tuple[list[_Want], list[_Want], list[_Want], list[_Want]] = ([], [], [], [])
        self.keeps: dict[str, KeepAlivePlan | None] = {}
        self.wanted: dict[str, list[int]] = {}

    def collect(self, p: EndpointPlan, keep: KeepAlivePlan | None) -> None:
        """``p``'s wants before any preemption (and the shortage of a demand above ``max_replicas``)."""
        v = p.view
        self.keeps[v.name] = keep
        self.wanted[v.name] = [0, 0, 0, 0]
        demand = v.demand_replicas()
        if (
            demand > v.max_replicas
            and _pinned(p) is None
            and _work_trigger(p, self.cfg, self.now_s, p.capacity)
        ):
            p.shortage.append(
                (demand - v.max_replicas, f"demand {demand} above maxReplicas {v.max_replicas}")
            )
        for phase, units, why in _wants(p, keep, self.cfg, self.now_s):
            self.groups[phase].append((p, units, why))
            self.wanted[v.name][phase] += units

    def add_lost(self, victims: list[EndpointPlan], phase: int, lo: int) -> None:
        """Add what ``victims`` want beyond what they wanted so far, now that this call preempted some of
        their replicas, as the next call (which sees them leaving) would collect it. Asked within the
        same call, so a preemption's cascade (a victim preempting a lower endpoint in turn) happens at
        once, not one call later on the same snapshot. A want of the phase under way goes after position
        ``lo`` of its group, in order: the victim's effective priority is below its preemptor's."""
        for victim in victims:
            have = self.wanted[victim.view.name]
            now = [0, 0, 0, 0]
            whys = ["", "", "", ""]
            for k, units, why in _wants(victim, self.keeps[victim.view.name], self.cfg, self.now_s):
                now[k] += units
                whys[k] = why
            for k in range(4):
                if now[k] <= have[k]:
                    continue
                want = (victim, now[k] - have[k], f"{whys[k]} ({victim.lost()} preempted)")
                have[k] = now[k]
                if k > phase:
                    self.groups[k].append(want)
                else:
                    insort(self.groups[phase], want, lo=lo, key=_want_order)


def _want_order(want: _Want) -> tuple[int, int, float, str]:
    p = want[0]
    return (-p.eff, -p.view.priority, -(p.wait_s or 0.0), p.view.name)


def _wants(
    p: EndpointPlan, keep: KeepAlivePlan | None, cfg: AutoscaleConfig, now_s: float
) -> list[tuple[int, int, str]]:
    """``(phase, units, why)`` for each phase in which ``p`` wants replicas, counting as gone the replicas
    this call preempted from it."""
    out: list[tuple[int, int, str]] = []
    if p.view.queued == 0 and p.view.running == 0:
        n = prewarm_wanted(p, keep)
        if n > 0:
            out.append((3, n, keep.reason if keep is not None else ""))
    v = p.view
    capacity, active = p.capacity - p.lost(), p.active - p.lost()
    pinned = _pinned(p)
    if pinned is not None:
        if pinned > capacity:
            out.append((1, pinned - capacity, f"pinned to {pinned} replicas, have {capacity}"))
        return out
    room = max(0, v.max_replicas - active)
    floor_units = max(0, v.min_replicas - capacity)
    work_units, why = 0, ""
    trigger = _work_trigger(p, cfg, now_s, capacity)
    if trigger:
        demand = v.demand_replicas()
        target = min(max(demand, v.min_replicas), v.max_replicas)
        work_units = max(0, target - capacity)
        why = (
            f"{trigger}: needs ceil(({v.queued} queued + {v.running} running) / {v.concurrency}) = "
            f"{demand} replicas, has {capacity}"
        )
    total = min(room, max(floor_units, work_units))
    if total <= 0:
        return out
    first = 1 if v.queued > 0 and capacity == 0 else 0
    min_part = max(0, min(floor_units, total) - first)
    rest = total - first - min_part
    if first:
        out.append((0, 1, why or f"{v.queued} queued, no replica"))
    if min_part:
        out.append((1, min_part, f"below minReplicas {v.min_replicas} (has {capacity})"))
    if rest:
        out.append((2, rest, why))
    return out


def _pinned(p: EndpointPlan) -> int | None:
    return p.view.override.desired_replicas if p.view.override is not None else None


def _work_trigger(p: EndpointPlan, cfg: AutoscaleConfig, now_s: float, capacity: int) -> str:
    """Why ``p``'s queue asks for replicas now (its threshold, or its oldest job's wait, past the
    cooldown); empty when it does not."""
    v, mem = p.view, p.mem
    if v.queued == 0:
        return ""
    waited = p.wait_s is not None and p.wait_s >= cfg.starvation_step_s
    cooled = (
        capacity == 0 or mem.last_scale_up_s is None or now_s - mem.last_scale_up_s >= v.scale_up_cooldown_s
    )
    if not (v.queued >= v.scale_up_threshold or waited) or not cooled:
        return ""
    if v.queued >= v.scale_up_threshold:
        return f"queued {v.queued} >= threshold {v.scale_up_threshold}"
    return f"oldest job waited {p.wait_s:.0f} s"


class _Relief:
    """Finds GPUs for blocked wants: draining GPUs first, then lower-priority idle replicas, then reclaim."""

    def __init__(self, plans: list[EndpointPlan], budget: _Budget, cfg: AutoscaleConfig) -> None:
        self.budget = budget
        self.cfg = cfg
        self.plans = plans
        self.owners: list[EndpointPlan] | None = None  # built on first need, lowest effective priority first
        self.start = 0
        self.quiet: list[EndpointPlan] | None = None  # owners with no work at all (phase 0 may take theirs)
        self.qstart = 0
        self.victims: dict[str, list[ReplicaView]] = {}
        self.hit: list[EndpointPlan] = []  # endpoints preempted since take_victims() last asked

    def take_victims(self) -> list[EndpointPlan]:
        """The endpoints this object preempted or reclaimed replicas of since the last call (each once)."""
        hit, self.hit = list(dict.fromkeys(self.hit)), []
        return hit

    def _victims_of(self, owner: EndpointPlan) -> list[ReplicaView]:
        got = self.victims.get(owner.view.name)
        if got is None:
            drained = owner.drained_ids()
            got = [r for r in owner.idle if r.id not in drained]
            if self.cfg.preempt_busy:
                got += sorted(owner.busy, key=lambda r: r.jobs_held)
            got.reverse()  # pop() from the end takes the longest-idle first
            self.victims[owner.view.name] = got
        return got

    def _owners(self) -> list[EndpointPlan]:
        if self.owners is None:
            for p in self.plans:
                v = p.view
                keep = max(v.min_replicas, _pinned(p) or 0, 1 if v.queued > 0 else 0)
                p.spare = max(0, p.capacity - p.expected - p.drained_count() - keep)
            self.owners = sorted((p for p in self.plans if p.spare > 0), key=lambda p: p.eff)
        return self.owners

    def relieve(self, p: EndpointPlan, short: int, limit: str, phase: int) -> None:
        gpr = p.view.gpus_per_replica
        notes: list[str] = []
        types = p.view.gpu_types
        if limit == "GPUs" and gpr > 0 and self.budget.never_offered(p):
            p.shortage.append(
                (
                    short,
                    f"no node offers GPU type {' or '.join(types or ())} and the cluster cannot grow "
                    "(no maxGpus above today's GPUs): set gpuTypes to types the cluster has, or add nodes",
                )
            )
            return
        if limit == "GPUs" and gpr > 0:
            # It never preempts for GPUs that are free (the endpoint preempted would scale back up on
            # them the next tick): it keeps them from the wants after it and counts them in, unless
            # this tick scaled it up and its cooldown holds the rest of its work back next tick, which
            # would not keep them (wants must come out the same twice). Then they only spare a
            # preemption they would cover entirely.
            need = short * gpr
            hold = phase < 2 or p.view.scale_up_cooldown_s <= 0 or p.ups == 0
            if hold:
                need -= self.budget.hold_free(p, need)
            claim = 0.0
            for pool in (self.budget.draining_g, self.budget.claimed.get(p.view.name, {})):
                for t in sorted(pool, key=lambda k: (k is None, k or "")):
                    if self.budget.helps(p, t) and need - claim > _EPS:
                        c = min(pool[t], need - claim)
                        pool[t] -= c
                        claim += c
            if claim > _EPS:
                need -= claim
                notes.append(f"waiting for {claim:g} GPUs from draining replicas")
            if not hold and self.budget.usable_free(p) + _EPS >= need:
                need = 0.0
            need = self._preempt(p, need, notes, phase)
            if need > _EPS and phase == 0:
                self._reclaim(p, need, notes)
        free = self.budget.gpus if limit == "GPUs" else None
        what = f"not enough {limit or 'room'}" + (
            f" ({max(0.0, free):g} GPUs free)" if free is not None else ""
        )
        if limit == "GPUs" and types is not None:
            typed_free = sum(self.budget.typed.get(t, 0.0) for t in types)
            what += f" ({typed_free:g} free of type {', '.join(types)})"
        p.shortage.append((short, "; ".join([what, *notes])))

    def _preempt(self, p: EndpointPlan, need: float, notes: list[str], phase: int) -> float:
        owners = self._owners()
        self.start = _skip_spent(owners, self.start)
        taken: list[tuple[EndpointPlan, ReplicaView, str]] = []
        got = self._gather(p, need, owners[self.start :], True, taken)
        if phase == 0 and got < need - _EPS:
            # Work waiting with no replica at all beats an idle replica of an endpoint with no work.
            if self.quiet is None:
                self.quiet = [o for o in owners if o.view.queued == 0 and o.view.running == 0]
            self.qstart = _skip_spent(self.quiet, self.qstart)
            got += self._gather(p, need - got, self.quiet[self.qstart :], False, taken)
        if got + _EPS < min(need, p.view.gpus_per_replica):
            for owner, r, _ in reversed(taken):  # not even one replica's worth: drain nothing
                owner.spare += 1
                self.victims[owner.view.name].append(r)
            return need
        for owner, r, why in taken:
            owner.preempted.setdefault(p.view.name, ([], why))[0].append(r.id)
            self.hit.append(owner)
        if taken:
            names = sorted({o.view.name for o, _, _ in taken})
            notes.append(f"preempting {len(taken)} replica(s) of {', '.join(names)}")
        return max(0.0, need - got)

    def _gather(
        self,
        p: EndpointPlan,
        need: float,
        owners: list[EndpointPlan],
        lower_only: bool,
        taken: list[tuple[EndpointPlan, ReplicaView, str]],
    ) -> float:
        """Tentatively take victims from ``owners`` (in order) until ``need`` GPUs; returns GPUs taken."""
        got = 0.0
        for owner in owners:
            if got >= need - _EPS or (lower_only and owner.eff >= p.eff):
                break
            gpr = owner.view.gpus_per_replica
            if owner is p or gpr <= 0:
                continue
            if lower_only:
                why = (
                    f"preempted for {p.view.name} (effective priority {p.eff} > {owner.eff}), blocked on "
                    f"GPUs; keeping {owner.view.min_replicas} minReplicas"
                )
            else:
                why = (
                    f"preempted for {p.view.name}, which has queued work and no replica, while this endpoint "
                    f"has no work; keeping {owner.view.min_replicas} minReplicas"
                )
            pool = self._victims_of(owner)
            while owner.spare > 0 and got < need - _EPS:
                # The longest-idle victim whose GPUs are of a type ``p`` can use (any, when ``p`` is untyped).
                i = next(
                    (j for j in range(len(pool) - 1, -1, -1) if self.budget.helps(p, pool[j].gpu_type)), -1
                )
                if i < 0:
                    break
                taken.append((owner, pool.pop(i), why))
                owner.spare -= 1
                got += gpr
        return got

    def _reclaim(self, p: EndpointPlan, need: float, notes: list[str]) -> None:
        after = self.cfg.starvation_reclaim_after_s
        if after is None or p.wait_s is None or p.wait_s < after:
            return
        best: EndpointPlan | None = None
        for o in self.plans:
            keep = max(o.view.min_replicas, 1)
            left = o.capacity - o.expected - o.drained_count() - keep
            if o is p or left <= 0 or o.view.gpus_per_replica + _EPS < need:
                continue
            if not _reclaimable(o, p, self.budget):
                continue  # every replica it could give is draining already, or of types p cannot use
            if best is None or (o.capacity, -o.eff) > (best.capacity, -best.eff):
                best = o
        if best is None:
            notes.append("no endpoint holds a replica it can spare for starvation relief")
            return
        usable = _reclaimable(best, p, self.budget)
        pick = next((r for r in best.idle if r.id in usable), None)
        if pick is None:
            pick = min((r for r in best.busy if r.id in usable), key=lambda r: r.jobs_held, default=None)
        if pick is None:
            return
        why = (
            f"starvation relief for {p.view.name}: its oldest job waited {p.wait_s:.0f} s >= {after:g} s "
            f"with no replica; the drained replica finishes the job it holds first"
        )
        best.preempted.setdefault(p.view.name, ([], why))[0].append(pick.id)
        self.hit.append(best)
        # Never a victim again this tick (a preemption after this one would drain it for another).
        pool = self.victims.get(best.view.name)
        if pool is not None and pick in pool:
            pool.remove(pick)
        if self.owners is not None:
            best.spare = max(0, best.spare - 1)
        notes.append(f"reclaiming replica {pick.id} of {best.view.name} (starvation relief)")


def _reclaimable(owner: EndpointPlan, p: EndpointPlan, budget: _Budget) -> set[str]:
    """Ids of ``owner``'s idle and busy replicas not drained yet whose GPUs ``p`` can use."""
    drained = owner.drained_ids()
    return {r.id for r in (*owner.idle, *owner.busy) if r.id not in drained and budget.helps(p, r.gpu_type)}


def _ups_reason(p: EndpointPlan) -> str:
    if not p.typed_ups:
        return p.ups_reason
    on = ", ".join(f"{k} on {'nodes to come' if t == 'growth' else t}" for t, k in p.typed_ups.items())
    return f"{p.ups_reason}; GPU types: {on}"


def _skip_spent(owners: list[EndpointPlan], start: int) -> int:
    while start < len(owners) and owners[start].spare <= 0:
        start += 1
    return start


def _expectations(p: EndpointPlan, now_s: float) -> dict[str, object]:
    """Memory changes for what this call asked of the pools and has not seen yet: the capacity its ups
    should bring, and the replicas it drained (each with the endpoint it was preempted for, or "")."""
    mem = p.mem
    changes: dict[str, object] = {}
    expected = mem.expected_capacity
    if p.ups or p.prewarm:
        expected = p.capacity + p.ups + p.prewarm
        changes["expected_at_s"] = now_s
    leaving = {**p.leaving, **dict.fromkeys(p.drain_ids, "")}
    drained = set(p.drain_ids)
    for by, (ids, _) in p.preempted.items():
        leaving.update(dict.fromkeys(ids, by))
        drained.update(ids)
    expected = max(0, expected - len(drained))
    if expected != mem.expected_capacity:
        changes["expected_capacity"] = expected
    if tuple(sorted(leaving.items())) != mem.leaving:
        changes["leaving"] = tuple(sorted(leaving.items()))
    if drained or (mem.leaving_at_s is not None and not leaving):
        changes["leaving_at_s"] = now_s if drained else None
    return changes


def _emit(plans: list[EndpointPlan], now_s: float) -> tuple[list[Decision], AutoscalerState]:
    out: list[Decision] = []
    memories: dict[str, EndpointMemory] = {}
    for p in plans:
        name, mem = p.view.name, p.mem
        changes: dict[str, object] = {}
        if p.drain_ids:
            out.append(Drain(name, tuple(p.drain_ids), p.drain_reason))
            changes["last_scale_down_s"] = now_s
            if p.released:
                changes["released_for_s"] = mem.quiet_since_s
        for by, (ids, why) in p.preempted.items():
            out.append(Drain(name, tuple(ids), why, preempted_by=by))
        if p.ups:
            out.append(ScaleUp(name, p.ups, _ups_reason(p)))
            changes["last_scale_up_s"] = now_s
        if p.prewarm:
            out.append(Prewarm(name, p.prewarm, f"pre-warm {p.prewarm} replica(s): {p.prewarm_reason}"))
            changes["prewarmed_for_s"] = mem.quiet_since_s
        changes.update(_expectations(p, now_s))
        if p.shortage:
            out.append(Blocked(name, sum(n for n, _ in p.shortage), "; ".join(w for _, w in p.shortage)))
            if mem.blocked_since_s is None:
                changes["blocked_since_s"] = now_s
        elif mem.blocked_since_s is not None:
            changes["blocked_since_s"] = None
        memories[name] = replace(mem, **changes) if changes else mem  # type: ignore[arg-type]
    return out, AutoscalerState(memories)
