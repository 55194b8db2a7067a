"""Lua scripts that make every job state change an atomic compare-and-set inside Redis.

All scripts take the key prefix as ``ARGV[1]`` and build key names with the helpers generated from
:mod:`orchestrator.store.keys`; the transition table is generated from
:data:`orchestrator.core.jobs.TRANSITIONS`, so Python and Lua cannot disagree about which moves are legal, and
the lost-lease budget and the queue score are rendered from their expressions in :mod:`orchestrator.core.jobs`
(:data:`~orchestrator.core.jobs.REQUEUE_AFTER_LOST_LEASE`, :data:`~orchestrator.core.jobs.QUEUE_SCORE`).
Times are integer milliseconds. Scripts touch keys they compute, so they target a single Redis (not Redis
Cluster), which is how Ripple deploys it.

Job hash fields: ep, status, input, output, error, webhook, created, queued, started, first_started, finished,
attempts, max_retries, timeout, ttl, low, score, worker, lease, retried, progress, streamed (STREAM_PUSH),
stream_read, stream_rid and stream_from (STREAM_READ), rid (the call whose result made it final: FINISH),
watch (a caller waits on ``fin:{id}`` for the job's end: see :mod:`orchestrator.store.finals`), qwatch (a
caller waits at the queue actor: the finishing worker tells it at once).

A full Redis (used memory over ``maxmemory``, ``noeviction``) refuses a script's command that adds data only
while the script has written nothing yet (it cannot stop one half way). Every step that moves an accepted job
on (a take, a result, a lost lease, a sweep) begins with a removal (the job leaving its queue or its lease,
``leave``), so it goes on, while SUBMIT, whose first write (``INCRBY``) adds, is refused whole: a full store
refuses new jobs but runs and finishes the ones it holds. A stream chunk or a progress update only adds, and
is refused (see ``test_a_full_store_still_runs_and_finishes_the_jobs_it_accepted``).
"""

from __future__ import annotations

from orchestrator.core.jobs import (
    DEFAULT_KEEP_RESULTS_S,
    FINAL,
    QUEUE_SCORE,
    REQUEUE_AFTER_LOST_LEASE,
    TRANSITIONS,
)
from orchestrator.store.keys import lua_prelude
from orchestrator.store.protocol import STATUS_FIELDS

WAKE_TOKENS = 16
"""Most tokens an endpoint's ``wake:{ep}`` list holds: one per queued job up to this, each waking one replica
blocked on the list (it then takes until the queue is empty); a token left over costs a replica one empty
take."""

FIN_TTL_MS = 300_000
"""How long a watched job's final signal (``fin:{id}``) stays after the job became final: longer than any
caller's hold (``runsync`` holds at most 300 s); a caller that comes later reads the job's status instead."""

INBOX_TTL_MS = 3_600_000
"""How long a replica's inbox outlives the last job handed to it (a replica that died with one: the job is
given back by ``held_by``, the list expires), and its fence its last redelivery."""

SENT_AGAIN_TTL_MS = 7_200_000
"""How long what answers a step sent again is kept (a worker's last take, ``taken:{worker}``; a call's reply,
``reply:{call}``): longer than any client sends a step again (``RIPPLE_STORE_RETRY_S`` is at most an hour)."""

INBOX_INPUT_BYTES = 65_536
"""Largest input a job handed to a parked replica carries in its inbox entry. A larger one (an image, audio)
is left out (the entry's input part empty) and the replica reads it from the job: one more read of it, and
no copy of megabytes through the script, the inbox list and the append-only file."""


def _table_lua() -> str:
    rows = []
    for src, targets in TRANSITIONS.items():
        inner = ", ".join(f"{t.value}=true" for t in sorted(targets, key=lambda s: s.value))
        rows.append(f"  {src.value}={{{inner}}}")
    final = ", ".join(f"{s.value}=true" for s in sorted(FINAL, key=lambda s: s.value))
    return "local ALLOWED = {\n" + ",\n".join(rows) + "\n}\n" + f"local FINAL = {{{final}}}\n"


def _rule(text: str, name: str, lua: str) -> str:
    """Put a shared rule's Lua where ``@name@`` stands (exactly once) in ``text``."""
    placeholder = f"@{name}@"
    if text.count(placeholder) != 1:
        raise ValueError(f"{placeholder} must appear exactly once in the script it is rendered into")
    return text.replace(placeholder, lua)


_COMMON = r"""
local FIN_TTL_MS = @FIN_TTL_MS@
local INBOX_TTL_MS = @INBOX_TTL_MS@
local SENT_AGAIN_TTL_MS = @SENT_AGAIN_TTL_MS@
local INBOX_INPUT_BYTES = @INBOX_INPUT_BYTES@
local WAKE_TOKENS = @WAKE_TOKENS@
local function I(x) return string.format('%d', x) end
local COUNTER = {COMPLETED='completed', FAILED='failed', TIMED_OUT='timed_out', CANCELLED='cancelled'}

local function allowed(from, to)
  local t = ALLOWED[from]
  return t ~= nil and t[to] == true
end

-- Every transition ends here (after `enter`). A job that became final is deleted by Redis, its history and
-- stream with it, once it has been kept K_keep_results ms (0: kept for ever); one retried lives on.
local function log(id, now, from, to, reason, worker)
  local hk = K_hist(id)
  redis.call('RPUSH', hk, cjson.encode({at=now, from=from, to=to, reason=reason, worker=worker}))
  redis.call('LTRIM', hk, -50, -1)
  if FINAL[to] then
    local keep = tonumber(redis.call('GET', K_keep_results) or '@DEFAULT_KEEP_RESULTS_MS@')
    if keep > 0 then
      redis.call('PEXPIRE', K_job(id), keep)
      redis.call('PEXPIRE', hk, keep)
      redis.call('PEXPIRE', K_stream(id), keep)
    end
  elseif FINAL[from] then
    redis.call('PERSIST', K_job(id))
    redis.call('PERSIST', hk)
  end
end

-- `n` jobs of the endpoint were queued: wake as many replicas blocked on its wake list (WAKE_TOKENS at most).
local function wake(ep, n)
  local wk = K_wake(ep)
  local add = math.min(n, WAKE_TOKENS - redis.call('LLEN', wk))
  for _ = 1, add do redis.call('RPUSH', wk, '1') end
end

-- Side effects of leaving a state. A removal first: at Redis's maxmemory a step that has written may go on
-- (see the module's docstring), so a result or a take starting here is written under a full store.
local function leave(jk, id, ep, from)
  if from == 'IN_QUEUE' then
    redis.call('ZREM', K_queue(ep), id)
    redis.call('ZREM', K_ttl, id)
  elseif from == 'IN_PROGRESS' then
    redis.call('ZREM', K_leases, id)
    redis.call('HINCRBY', K_counts(ep), 'in_progress', -1)
  end
end

-- Side effects of entering a state (the status field included).
local function enter(jk, id, ep, from, to, now, wid)
  redis.call('HSET', jk, 'status', to)
  if to == 'IN_QUEUE' then
    local f = redis.call('HMGET', jk, 'score', 'ttl')
    redis.call('ZADD', K_queue(ep), f[1], id)
    wake(ep, 1)
    redis.call('ZADD', K_ttl, I(now + tonumber(f[2])), id)
    redis.call('HSET', jk, 'queued', I(now), 'lease', '')
    -- Waiting again: no worker and no running attempt (else the status object shows a growing executionTime).
    redis.call('HDEL', jk, 'worker', 'started')
    if FINAL[from] then
      redis.call('HINCRBY', jk, 'retried', 1)
      redis.call('HINCRBY', K_counts(ep), 'retried', 1)
      redis.call('HDEL', jk, 'output', 'error', 'finished', 'progress', 'rid')
      redis.call('HDEL', jk, 'stream_read', 'stream_rid', 'stream_from')
      redis.call('DEL', K_stream(id))
      redis.call('DEL', K_fin(id))
    end
  elseif to == 'IN_PROGRESS' then
    local timeout = tonumber(redis.call('HGET', jk, 'timeout'))
    redis.call('HINCRBY', jk, 'attempts', 1)
    redis.call('HSET', jk, 'worker', wid, 'started', I(now), 'lease', I(now + timeout))
    redis.call('HSETNX', jk, 'first_started', I(now))
    redis.call('HDEL', jk, 'finished', 'progress')
    redis.call('ZADD', K_leases, I(now + timeout), id)
    redis.call('HINCRBY', K_counts(ep), 'in_progress', 1)
  else
    redis.call('HSET', jk, 'finished', I(now), 'lease', '')
    redis.call('HINCRBY', K_counts(ep), COUNTER[to], 1)
    if redis.call('HEXISTS', jk, 'webhook') == 1 then
      redis.call('RPUSH', K_webhooks, id)
    end
    -- A caller waits on Redis for this job (WATCH_FINAL marked it): tell it, in the step that made it final.
    if redis.call('HEXISTS', jk, 'watch') == 1 then
      redis.call('RPUSH', K_fin(id), to)
      redis.call('PEXPIRE', K_fin(id), FIN_TTL_MS)
    end
  end
end

-- Compare-and-set one job to `to`. `expect_from` is a comma list of states or ''; `expect_worker` or ''.
-- `to` may be REQUEUE_OR_FAIL: back to the queue while attempts <= max_retries, else FAILED.
-- Returns {code, from, worker, ep, to}: code 1 moved, 0 refused, -1 no such job.
local function move(id, to, now, reason, expect_from, expect_worker, err)
  local jk = K_job(id)
  local cur = redis.call('HMGET', jk, 'status', 'ep', 'worker', 'attempts', 'max_retries')
  local from, ep, worker = cur[1], cur[2], cur[3] or ''
  if not from then return {-1, '', '', '', to} end
  if expect_from ~= '' and not string.find(',' .. expect_from .. ',', ',' .. from .. ',', 1, true) then
    return {0, from, worker, ep, to}
  end
  if expect_worker ~= '' and worker ~= expect_worker then return {0, from, worker, ep, to} end
  if to == 'REQUEUE_OR_FAIL' then
    if @REQUEUE_AFTER_LOST_LEASE@ then to = 'IN_QUEUE' else to = 'FAILED' end
  end
  if not allowed(from, to) then return {0, from, worker, ep, to} end
  leave(jk, id, ep, from)
  enter(jk, id, ep, from, to, now, '')
  if err ~= '' and (to == 'FAILED' or to == 'TIMED_OUT') then redis.call('HSET', jk, 'error', err) end
  log(id, now, from, to, reason, worker)
  return {1, from, worker, ep, to}
end

-- Up to `n` queued jobs of the endpoint leased to `wid` of version `ver` ('' = unknown: cleared), each
-- IN_PROGRESS, appended to `out` as (id, input, attempts); with `inbox` (the jobs go into an inbox entry), an
-- input over INBOX_INPUT_BYTES as '' (the replica reads it from the job).
local function take_queued(ep, wid, n, now, ver, out, inbox)
  if n <= 0 then return out end
  local popped = redis.call('ZPOPMIN', K_queue(ep), n)
  for i = 1, #popped, 2 do
    local id = popped[i]
    local jk = K_job(id)
    if redis.call('HGET', jk, 'status') == 'IN_QUEUE' then
      redis.call('ZREM', K_ttl, id)
      enter(jk, id, ep, 'IN_QUEUE', 'IN_PROGRESS', now, wid)
      if ver ~= '' then redis.call('HSET', jk, 'version', ver) else redis.call('HDEL', jk, 'version') end
      log(id, now, 'IN_QUEUE', 'IN_PROGRESS', 'taken', wid)
      out[#out + 1] = id
      if inbox and redis.call('HSTRLEN', jk, 'input') > INBOX_INPUT_BYTES then
        out[#out + 1] = ''  -- for an inbox entry: the replica reads the input from the job
      else
        out[#out + 1] = redis.call('HGET', jk, 'input')
      end
      out[#out + 1] = redis.call('HGET', jk, 'attempts')
    end
  end
  return out
end

-- A take sent again (its id `tid` is the worker's last: redis-py's retry of a take whose reply was lost) is
-- answered with the jobs the first run handed out that the worker still holds, as (id, input, attempts), and
-- takes nothing more; nil for a new take.
local function taken_before(wid, tid)
  local rec = redis.call('GET', K_taken(wid))
  if not rec or string.sub(rec, 1, #tid + 1) ~= tid .. ' ' then return nil end
  local out = {}
  for id in string.gmatch(string.sub(rec, #tid + 2), '%S+') do
    local f = redis.call('HMGET', K_job(id), 'status', 'worker', 'input', 'attempts')
    if f[1] == 'IN_PROGRESS' and f[2] == wid then
      out[#out + 1] = id
      out[#out + 1] = f[3]
      out[#out + 1] = f[4]
    end
  end
  return out
end

-- Remember the jobs take `tid` hands to `wid` (`out` as take_queued builds it), for taken_before.
local function remember_taken(wid, tid, out)
  if #out == 0 then return out end
  local rec = {tid}
  for i = 1, #out, 3 do rec[#rec + 1] = out[i] end
  redis.call('SET', K_taken(wid), table.concat(rec, ' '), 'PX', SENT_AGAIN_TTL_MS)
  return out
end

-- The reply of call `cid` when it ran before (a MOVE, SWEEP, PURGE or WEBHOOK_CLAIM sent again: redis-py's
-- retry of a call whose reply was lost, answered as the first run was, so its caller still acts on what it
-- did), else nil.
local function replied_before(cid)
  local kept = redis.call('GET', K_reply(cid))
  if kept then return cjson.decode(kept) end
  return nil
end

-- Keep `reply`, the reply of call `cid` that changed something, for replied_before; returns it.
local function keep_reply(cid, reply)
  redis.call('SET', K_reply(cid), cjson.encode(reply), 'PX', SENT_AGAIN_TTL_MS)
  return reply
end

-- Forget that `wid` is parked (waiting on its inbox for a job to be handed to it).
local function unpark(wid)
  local rec = redis.call('HGET', K_parked_at, wid)
  if not rec then return end
  local sep = string.find(rec, '|', 1, true)
  redis.call('LREM', K_parked(string.sub(rec, sep + 1)), 0, wid)
  redis.call('HDEL', K_parked_at, wid)
end

-- The endpoint's longest-parked replica that is not draining, unparked; nil when none. Returns its id and
-- its version.
local function parked_worker(ep)
  while true do
    local wid = redis.call('LPOP', K_parked(ep))
    if not wid then return nil end
    local rec = redis.call('HGET', K_parked_at, wid)
    redis.call('HDEL', K_parked_at, wid)
    if rec and redis.call('SISMEMBER', K_draining, wid) == 0 then
      return wid, string.sub(rec, 1, string.find(rec, '|', 1, true) - 1)
    end
  end
end
"""
_COMMON = _rule(_COMMON, "FIN_TTL_MS", str(FIN_TTL_MS))
_COMMON = _rule(_COMMON, "INBOX_TTL_MS", str(INBOX_TTL_MS))
_COMMON = _rule(_COMMON, "SENT_AGAIN_TTL_MS", str(SENT_AGAIN_TTL_MS))
_COMMON = _rule(_COMMON, "INBOX_INPUT_BYTES", str(INBOX_INPUT_BYTES))
_COMMON = _rule(_COMMON, "WAKE_TOKENS", str(WAKE_TOKENS))
_COMMON = _rule(_COMMON, "DEFAULT_KEEP_RESULTS_MS", str(int(DEFAULT_KEEP_RESULTS_S * 1000)))
_COMMON = _rule(
    _COMMON,
    "REQUEUE_AFTER_LOST_LEASE",
    REQUEUE_AFTER_LOST_LEASE.lua(
        {"attempts": "tonumber(cur[4] or '0')", "max_retries": "tonumber(cur[5] or '0')"}
    ),
)


def _script(body: str) -> str:
    return lua_prelude() + _table_lua() + _COMMON + body


SUBMIT = _script(
    _rule(
        r"""
-- ARGV: P, ep, max_queue (0 = none), now, spec_sha, watch, n, then n x (id, input, webhook, low,
-- timeout_ms, ttl_ms, retries). spec_sha ('' = not checked): the SHA-1 of the endpoint's spec the jobs were
-- built from; when the stored spec is another (or gone), nothing is written. watch '1': the jobs are marked
-- watched (their caller waits on K_fin for their end; refused, the first job's K_fin gets an empty element
-- so that a wait pipelined after this step ends at once). Returns {1, depth, handed} (handed: how many of
-- the jobs went straight to a parked replica), {-1, depth} (full), {-2, 0} (the spec changed, or the
-- endpoint is gone). Sent again (redis-py retries a command whose connection failed before its reply came,
-- and the first may have run), it writes nothing: the jobs are fresh ids, written whole by the first, and may
-- be leased or done by now (written again, they would be queued again and run twice).
local ep, maxq, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local sha, watch, n = ARGV[5], ARGV[6], tonumber(ARGV[7])
if n > 0 and redis.call('EXISTS', K_job(ARGV[8])) == 1 then
  return {1, redis.call('ZCARD', K_queue(ep)), 0}
end
local function refused(code, depth)
  if watch == '1' and n > 0 then
    redis.call('RPUSH', K_fin(ARGV[8]), '')
    redis.call('PEXPIRE', K_fin(ARGV[8]), 1000)
  end
  return {code, depth}
end
if sha ~= '' then
  local spec = redis.call('HGET', K_endpoints, ep)
  if not spec or redis.sha1hex(spec) ~= sha then return refused(-2, 0) end
end
local q = K_queue(ep)
local depth = redis.call('ZCARD', q)
if maxq > 0 and depth + n > maxq then return refused(-1, depth) end
local base = redis.call('INCRBY', K_seq, n) - n
for i = 0, n - 1 do
  local o = 8 + i * 7
  local id, webhook, low, ttl = ARGV[o], ARGV[o + 2], tonumber(ARGV[o + 3]), tonumber(ARGV[o + 5])
  local score = I(@QUEUE_SCORE@)
  local jk = K_job(id)
  redis.call('HSET', jk, 'ep', ep, 'status', 'IN_QUEUE', 'input', ARGV[o + 1], 'created', I(now),
    'queued', I(now), 'attempts', 0, 'max_retries', ARGV[o + 6], 'timeout', ARGV[o + 4], 'ttl', ARGV[o + 5],
    'low', low, 'score', score, 'retried', 0)
  if webhook ~= '' then redis.call('HSET', jk, 'webhook', webhook) end
  if watch == '1' then redis.call('HSET', jk, 'watch', '1') end
  redis.call('ZADD', q, score, id)
  redis.call('ZADD', K_ttl, I(now + ttl), id)
  redis.call('ZADD', K_jobs, I(now), id)
end
-- A replica parked waiting for work gets a job at once, leased to it, with its input (up to
-- INBOX_INPUT_BYTES; a larger one it reads from the job): no take after its wake-up. Handed in the queue's
-- order (the job TAKE would give it: normal priority before low); the rest wait in the queue, a token each
-- on the wake list.
local queued = n
while queued > 0 do
  local wid, ver = parked_worker(ep)
  if not wid then break end
  local job = take_queued(ep, wid, 1, now, ver, {}, true)
  if #job == 0 then  -- the queue's head was not a queued job: the worker waits on, first in line
    redis.call('LPUSH', K_parked(ep), wid)
    redis.call('HSET', K_parked_at, wid, ver .. '|' .. ep)
    break
  end
  redis.call('RPUSH', K_inbox(wid), job[1] .. '\n' .. job[3] .. '\n' .. job[2])
  redis.call('PEXPIRE', K_inbox(wid), INBOX_TTL_MS)
  queued = queued - 1
end
wake(ep, queued)
return {1, depth + queued, n - queued}
""",
        "QUEUE_SCORE",
        QUEUE_SCORE.lua({"low": "low", "seq": "base + i + 1"}),
    )
)

TAKE = _script(
    r"""
-- ARGV: P, ep, worker, n, now, version ('' = unknown), take id. Returns {} when the worker is draining or
-- the queue is empty, else n' x (id, input, attempts). The draining check sits in the same atomic step that
-- hands out jobs. The worker's endpoint version is recorded on each job taken (an unknown one clears it). A
-- take sent again answers what the first run took (taken_before).
local ep, wid, n, now, ver, tid = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local again = taken_before(wid, tid)
if again then return again end
if redis.call('SISMEMBER', K_draining, wid) == 1 then return {} end
return remember_taken(wid, tid, take_queued(ep, wid, n, now, ver, {}))
"""
)

_CLAIM = r"""
-- A replica's take from the store: the worker is unparked; the jobs handed to it meanwhile (its inbox) are
-- its own, whatever `n`; unless it is draining, up to `n` more are taken from the queue as TAKE does; with
-- `park` '1' and nothing at all, the worker is parked (SUBMIT hands its next job straight to its inbox).
-- Returns n' x (id, input, attempts); {-1} and nothing done when `fence` is older than the worker's (a step
-- sent before the worker's last redelivery, held in a partition until after it: HELD_BY). A claim sent again
-- (the same take id `tid`) answers what the first run handed out (taken_before).
local function claim(ep, wid, n, now, ver, park, fence, tid)
  if tonumber(redis.call('GET', K_fence(wid)) or '0') > tonumber(fence) then return {-1} end
  local again = taken_before(wid, tid)
  if again then return again end
  unpark(wid)
  local out = {}
  local ik = K_inbox(wid)
  for _, e in ipairs(redis.call('LRANGE', ik, 0, -1)) do
    if e ~= '' then
      local a = string.find(e, '\n', 1, true)
      local b = string.find(e, '\n', a + 1, true)
      local id, input = string.sub(e, 1, a - 1), string.sub(e, b + 1)
      if input == '' then input = redis.call('HGET', K_job(id), 'input') end  -- left out: a large one
      if input then
        out[#out + 1] = id
        out[#out + 1] = input
        out[#out + 1] = string.sub(e, a + 1, b - 1)
      end
    end
  end
  redis.call('DEL', ik)
  local draining = redis.call('SISMEMBER', K_draining, wid) == 1
  if not draining then take_queued(ep, wid, n - math.floor(#out / 3), now, ver, out) end
  if #out == 0 and park == '1' and not draining then
    redis.call('RPUSH', K_parked(ep), wid)
    redis.call('HSET', K_parked_at, wid, ver .. '|' .. ep)
  end
  return remember_taken(wid, tid, out)
end
"""

_FINISH = r"""
-- Final results, `n` of them from ARGV[o] on, each (id, worker, to, output ('' = none), error ('' = none),
-- is_stream '0'|'1'), sent in the call `rid`. The first final result wins: a result from a worker that no
-- longer holds the job is refused (code 0), but for one the call `rid` made final, answered as applied again
-- (redis-py's retry of a call whose reply was lost: its caller still tells the queue). Returns n x (code,
-- status, ep, created, first_started, started, webhook, awaited): webhook 1 when a delivery was queued,
-- awaited 1 when a caller waits at the queue for the job (WATCH_FINAL's 'q').
local function finish(now, rid, n, o)
  local out = {}
  for i = 0, n - 1 do
    local a = o + i * 6
    local id, wid, to, output, err, is_stream = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], ARGV[a+5]
    local jk = K_job(id)
    local cur = redis.call('HMGET', jk, 'status', 'ep', 'worker', 'created', 'first_started', 'started',
      'rid')
    local code = 0
    if not cur[1] then
      code = -1
    elseif FINAL[cur[1]] and cur[7] == rid then
      code = 1
    elseif cur[1] == 'IN_PROGRESS' and cur[3] == wid and allowed('IN_PROGRESS', to) then
      code = 1
      leave(jk, id, cur[2], 'IN_PROGRESS')
      redis.call('HSET', jk, 'rid', rid)
      if is_stream == '1' and (output == '' or output == '[]' or output == 'null') then
        local chunks = redis.call('LRANGE', K_stream(id), 0, -1)
        if #chunks > 0 then output = '[' .. table.concat(chunks, ',') .. ']' end
      end
      if output ~= '' then redis.call('HSET', jk, 'output', output) end
      if err ~= '' then redis.call('HSET', jk, 'error', err) end
      enter(jk, id, cur[2], 'IN_PROGRESS', to, now, wid)
      log(id, now, 'IN_PROGRESS', to, 'result', wid)
    end
    local status = redis.call('HGET', jk, 'status') or ''
    local webhook, awaited = 0, 0
    if code == 1 then
      webhook = redis.call('HEXISTS', jk, 'webhook')
      awaited = redis.call('HEXISTS', jk, 'qwatch')
    end
    out[#out + 1] = code
    out[#out + 1] = status
    out[#out + 1] = cur[2] or ''
    out[#out + 1] = cur[4] or ''
    out[#out + 1] = cur[5] or ''
    out[#out + 1] = cur[6] or ''
    out[#out + 1] = webhook
    out[#out + 1] = awaited
  end
  return out
end
"""

CLAIM = _script(
    _CLAIM
    + r"""
-- ARGV: P, ep, worker, n, now, version ('' = unknown), park ('1' | '0'), fence, take id. See claim().
return claim(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7], ARGV[8], ARGV[9])
"""
)

FINISH = _script(
    _FINISH
    + r"""
-- ARGV: P, now, call id, n, then n results as finish() reads them. Returns finish()'s reply.
return finish(tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), 5)
"""
)

FINISH_CLAIM = _script(
    _FINISH
    + _CLAIM
    + r"""
-- ARGV: P, ep, worker, n, now, version, park, fence, take id (as CLAIM), call id, k, then k results (as
-- FINISH). A replica's results and its next take in one step, the results first (a caller waiting on one is
-- woken before the take; a result is never fenced: FINISH refuses one from a worker that no longer holds
-- the job).
-- Returns {finish()'s reply, claim()'s reply}.
local now = tonumber(ARGV[5])
local done = finish(now, ARGV[10], tonumber(ARGV[11]), 12)
return {done, claim(ARGV[2], ARGV[3], tonumber(ARGV[4]), now, ARGV[6], ARGV[7], ARGV[8], ARGV[9])}
"""
)

MOVE = _script(
    r"""
-- ARGV: P, id, to, now, reason, expect_from, expect_worker, error, call id. Returns move()'s reply (the
-- first run's, for a call sent again).
local before = replied_before(ARGV[9])
if before then return before end
local r = move(ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if r[1] == 1 then keep_reply(ARGV[9], r) end
return r
"""
)

SWEEP = _script(
    r"""
-- ARGV: P, which ('ttl' | 'leases'), now, limit, call id. Times out queued jobs past their ttl, or
-- in-progress jobs past their execution deadline. Returns k x (id, from, worker, ep) (the first run's, for a
-- call sent again).
local before = replied_before(ARGV[5])
if before then return before end
local which, now, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local key, from, err = K_ttl, 'IN_QUEUE', 'expired in the queue after its ttl'
if which == 'leases' then key, from, err = K_leases, 'IN_PROGRESS', 'execution timeout exceeded' end
local ids = redis.call('ZRANGEBYSCORE', key, '-inf', I(now), 'LIMIT', 0, limit)
local out = {}
for _, id in ipairs(ids) do
  local r = move(id, 'TIMED_OUT', now, which, from, '', err)
  if r[1] == 1 then
    out[#out + 1] = id
    out[#out + 1] = r[2]
    out[#out + 1] = r[3]
    out[#out + 1] = r[4]
  else
    redis.call('ZREM', key, id)
  end
end
if #out > 0 then keep_reply(ARGV[5], out) end
return out
"""
)

PURGE = _script(
    r"""
-- ARGV: P, ep, now, limit, call id. Cancels up to `limit` queued jobs of the endpoint; returns how many (the
-- first run's count, for a call sent again).
local before = replied_before(ARGV[5])
if before then return before end
local ep, now, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ids = redis.call('ZRANGE', K_queue(ep), 0, limit - 1)
local n = 0
for _, id in ipairs(ids) do
  local r = move(id, 'CANCELLED', now, 'purged', 'IN_QUEUE', '', '')
  if r[1] == 1 then n = n + 1 else redis.call('ZREM', K_queue(ep), id) end
end
if n > 0 then keep_reply(ARGV[5], n) end
return n
"""
)

WEBHOOK_CLAIM = _script(
    r"""
-- ARGV: P, n, call id. Moves up to n pending webhook deliveries (job ids) to the in-flight list and returns
-- them (the first run's, for a call sent again: else they would wait in flight for the queue's restart).
local before = replied_before(ARGV[3])
if before then return before end
local out = {}
for _ = 1, tonumber(ARGV[2]) do
  local id = redis.call('LMOVE', K_webhooks, K_webhooks_inflight, 'LEFT', 'RIGHT')
  if not id then break end
  out[#out + 1] = id
end
if #out > 0 then keep_reply(ARGV[3], out) end
return out
"""
)

STREAM_PUSH = _script(
    r"""
-- ARGV: P, id, worker, first, n, chunks... Appends chunks only while the worker holds the job; returns 1 or
-- 0.
-- first ('' = append them all): the index of the first chunk among those this attempt pushed, so that a push
-- sent again (its reply lost: redis-py's retry, or the replica's after a queue restart) appends only what is
-- not there yet. The job's 'streamed' field is '<attempt>:<chunks pushed so far>'.
local jk = K_job(ARGV[2])
local cur = redis.call('HMGET', jk, 'status', 'worker', 'attempts', 'streamed')
if cur[1] ~= 'IN_PROGRESS' or cur[2] ~= ARGV[3] then return 0 end
local n, skip = tonumber(ARGV[5]), 0
if ARGV[4] ~= '' then
  local first, had = tonumber(ARGV[4]), 0
  local attempt, count = string.match(cur[4] or '', '^(%d+):(%d+)$')
  if attempt == cur[3] then had = tonumber(count) end
  skip = math.max(0, had - first)
  if skip >= n then return 1 end
  redis.call('HSET', jk, 'streamed', cur[3] .. ':' .. (first + n))
end
for i = skip + 1, n do redis.call('RPUSH', K_stream(ARGV[2]), ARGV[5 + i]) end
return 1
"""
)

STREAM_READ = _script(
    r"""
-- ARGV: P, id, read. Returns {status, chunk...} with the chunks not yet returned, advancing the cursor.
-- A read sent again (the same read id: redis-py's retry of one whose reply was lost) answers from where
-- it began, so its caller is not moved past chunks it never got.
local jk = K_job(ARGV[2])
local cur = redis.call('HMGET', jk, 'status', 'stream_read', 'stream_rid', 'stream_from')
if not cur[1] then return {} end
local start = tonumber(cur[2] or '0')
if cur[3] == ARGV[3] then start = tonumber(cur[4]) end
local chunks = redis.call('LRANGE', K_stream(ARGV[2]), start, -1)
if #chunks > 0 then
  redis.call('HSET', jk, 'stream_read', start + #chunks, 'stream_rid', ARGV[3], 'stream_from', start)
end
local out = {cur[1]}
for _, c in ipairs(chunks) do out[#out + 1] = c end
return out
"""
)

PROGRESS = _script(
    r"""
-- ARGV: P, id, worker, output. Records a progress update while the worker holds the job. Returns 1 or 0.
local jk = K_job(ARGV[2])
local cur = redis.call('HMGET', jk, 'status', 'worker')
if cur[1] ~= 'IN_PROGRESS' or cur[2] ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'progress', ARGV[4])
return 1
"""
)

WATCH_FINAL = _script(
    _rule(
        r"""
-- ARGV: P, id[, ep[, 'q']]. Returns the job's status fields (STATUS_FIELDS' values, in order; not its
-- input), {} when there is no such job, or when ep is given and the job is another endpoint's. A job that is
-- not final yet is marked watched, in the same atomic step: the script that makes it final then pushes to
-- K_fin(id), so a caller that saw it not final and then blocks on K_fin(id) cannot miss its end. With 'q' the
-- caller is the queue actor, told by the finishing worker (FINISH's awaited): marked 'qwatch' instead, and
-- nothing is pushed.
local jk = K_job(ARGV[2])
local f = redis.call('HMGET', jk, 'status', 'ep')
local status = f[1]
if not status then return {} end
if ARGV[3] and ARGV[3] ~= '' and f[2] ~= ARGV[3] then return {} end
if not FINAL[status] then
  if ARGV[4] == 'q' then redis.call('HSET', jk, 'qwatch', '1') else redis.call('HSET', jk, 'watch', '1') end
end
return redis.call('HMGET', jk, @STATUS_FIELDS@)
""",
        "STATUS_FIELDS",
        ", ".join(f"'{f}'" for f in STATUS_FIELDS),
    )
)

LIST_JOBS = _script(
    r"""
-- ARGV: P, limit, ms ('' = from the newest), id. Up to `limit` jobs of the listing index newest first (jobs
-- created at the same time: by id, descending, as Redis orders a sorted set's members), as a flat list
-- (id, created_ms, ...): with `ms` and `id`, those after the job `id` created at `ms` (found by its place,
-- whether or not it is still listed: a binary search among the ids created at `ms`); with `ms` alone, those
-- created before `ms`. A place costs O(log N) whatever the page: no offset is skipped over.
local K, limit, ms, id = K_jobs, tonumber(ARGV[2]), ARGV[3], ARGV[4]
local function below(a, b)  -- byte order, as Redis orders members (Lua's own `<` follows the locale)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local start = 0
if ms ~= '' and id == '' then
  start = redis.call('ZCOUNT', K, ms, '+inf')
elseif ms ~= '' then
  start = redis.call('ZCOUNT', K, '(' .. ms, '+inf')
  local stop = start + redis.call('ZCOUNT', K, ms, ms)
  while start < stop do  -- the first place among those created at `ms` whose id is below `id`
    local mid = math.floor((start + stop) / 2)
    if below(redis.call('ZREVRANGE', K, mid, mid)[1], id) then stop = mid else start = mid + 1 end
  end
end
if limit <= 0 then return {} end
return redis.call('ZREVRANGE', K, start, start + limit - 1, 'WITHSCORES')
"""
)

FORGET_DELETED = _script(
    r"""
-- ARGV: P, limit. Of the `limit` oldest ids of the job listing, those whose job is gone (Redis deleted it
-- once it had been kept K_keep_results after it ended) leave the listing. Returns how many went.
local gone = 0
for _, id in ipairs(redis.call('ZRANGE', K_jobs, 0, tonumber(ARGV[2]) - 1)) do
  if redis.call('EXISTS', K_job(id)) == 0 then
    redis.call('ZREM', K_jobs, id)
    gone = gone + 1
  end
end
return gone
"""
)

HELD_BY = _script(
    r"""
-- ARGV: P, worker, with_input ('1' or '0'). The running jobs the worker holds (a scan of every lease: run
-- when a worker is lost, or when a replica's own take from the store failed; not per job), after the
-- worker's fence: {fence, ids...}, or with `with_input` '1' {fence, (id, input, attempts) triples...}. The
-- worker is unparked, its inbox emptied and its fence raised first: no job is handed to it after this step,
-- none handed before is read from its inbox again (each is among the jobs returned), and no take it sent
-- before (CLAIM with an older fence) takes a job or parks it after this step.
local wid = ARGV[2]
unpark(wid)
redis.call('DEL', K_inbox(wid))
local fk = K_fence(wid)
local out = {redis.call('INCR', fk)}
redis.call('PEXPIRE', fk, INBOX_TTL_MS)
for _, id in ipairs(redis.call('ZRANGE', K_leases, 0, -1)) do
  local f = redis.call('HMGET', K_job(id), 'worker', 'input', 'attempts')
  if f[1] == wid then
    out[#out + 1] = id
    if ARGV[3] == '1' then
      out[#out + 1] = f[2]
      out[#out + 1] = f[3]
    end
  end
end
return out
"""
)

AUTOSCALER_LEASE = (
    lua_prelude()
    + r"""
-- ARGV: P, holder, ttl_ms. Compare-and-set of the autoscaler's leadership lease: taken when nobody holds it,
-- renewed (its TTL reset) when `holder` does, left alone otherwise. Returns 1 when `holder` holds it now.
local holder, ttl = ARGV[2], ARGV[3]
local cur = redis.call('GET', K_autoscaler_leader)
if cur == false or cur == holder then
  redis.call('SET', K_autoscaler_leader, holder, 'PX', ttl)
  return 1
end
return 0
"""
)
