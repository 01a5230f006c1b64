"""Lua scripts that keep every run-control step to one atomic round trip.

Every script takes ``KEYS`` = the stream, the conversation's meta hash, the conversation record and
the run records (one hash slot, see :func:`keys.conversation_keys`) and starts its ``ARGV`` with the
stream TTL (ms) and the ``MAXLEN`` cap. Fields of the meta hash (same TTL as the stream):

- ``seq:<run>``       next sequence number of the run (``seq`` has no gaps, across attempts too)
- ``status:<run>``    queued | running | completed | failed | cancelled
- ``created:<run>``   ms epoch the run was queued
- ``attempts:<run>``  how many times the entity began the run; older attempts are fenced off
- ``token:<run>``     the delivery that began the current attempt (makes ``BEGIN`` replayable)
- ``last:<run>``      ``<attempt> <write> <id> <seq>`` of the entity's latest append (replays)
- ``lease:<run>``     ms (Redis clock) until which a running run counts as alive
- ``deadline:<run>``  ms (Redis clock) by which a queued run must have begun
- ``cancel:<run>``    present when a cancel was requested: ``<request token> <answer>``
- ``turn:<run>``      the history messages a completed run added (restores a lost entity commit)
- ``active_run``      the run holding the conversation's run lock
- ``latest_run`` / ``latest_start``  the newest run and the stream id of its ``run.queued``
- ``first_id``        the first stream id ever written (to detect trimming)
- ``record_ttl`` / ``records_kept``  the run records' TTL (ms) and bound, as the latest ``START``
                      was given them (the scripts that end a run have no ``ARGV`` for them)
- ``idem:<key>``      ``<run> <cursor> <digest>`` for an ``Idempotency-Key`` already used
- ``key:<run>``       the ``Idempotency-Key`` that started the run
- ``trace:<run>``     the span context of the request that queued the run (when telemetry is on)
- ``runs``            the ids of the runs whose fields are kept, oldest first: ``START`` deletes the
                      fields (and the ``Idempotency-Key``) of runs beyond the newest
                      :data:`RUN_RECORDS_KEPT`, so the hash does not grow with every run

The conversation record (``created``, ``updated``, and ``owner`` when callers have identities)
lives ``CONVERSATION_TTL_DAYS`` after the last message; the stream and meta hash may expire long
before it.

The run records (a hash: ``<run>`` -> the record as JSON, and ``runs``, the runs kept, oldest
first) are written with each run's terminal event, by whichever script writes it: ``{"status",
"start", "events"}``, where ``events`` are the run's ``[type, seq, ts, data]`` with each stretch of
consecutive non-empty ``message.delta`` text merged into one delta (which keeps the first one's
``seq`` and ``ts``). So a run's whole result outlives its stream, and only terminal events pay for
it. The hash keeps the newest ``records_kept`` runs and lives ``record_ttl`` after the latest end.
Runs whose start the ``MAXLEN`` cap trimmed away get no record.

Leases use the Redis server's clock (``TIME``), so the clocks of workers and HTTP front ends never
need to agree. A run whose lease or start deadline has passed is ended by whichever request meets
it first (:data:`REAP`, and inside :data:`START` and :data:`CANCEL`).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from ..events import (
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_RESTARTED,
    RUN_STARTED,
    TERMINAL_TYPES,
    dumps_line,
)

# The run status each event leaves behind (the meta hash's ``status:<run>``).
STATUS_AFTER = {
    RUN_QUEUED: "queued",
    RUN_STARTED: "running",
    RUN_RESTARTED: "running",
    RUN_COMPLETED: "completed",
    RUN_FAILED: "failed",
    RUN_CANCELLED: "cancelled",
}

# Statuses of a run that has its terminal event.
FINISHED_STATUSES = frozenset(STATUS_AFTER[t] for t in TERMINAL_TYPES)

# The newest runs whose records are kept: in the meta hash (and so in the status) and in the
# entity's state.
RUN_RECORDS_KEPT = 50


def append_args(
    run_id: str,
    event_type: str,
    data: dict[str, Any],
    *,
    ttl_ms: int,
    maxlen: int,
    attempt: int | None = None,
    write: int = 0,
    lease_ms: int = 0,
    turn: list[dict[str, Any]] | None = None,
    now: float | None = None,
    check_lost: bool = False,
    entry_id: str = "*",
) -> list[Any]:
    """The ``ARGV`` of the ``APPEND`` script for one event."""
    return [
        ttl_ms,
        maxlen,
        run_id,
        "" if attempt is None else attempt,
        write,
        event_type,
        dumps_line(data),
        int((time.time() if now is None else now) * 1000),
        STATUS_AFTER.get(event_type, ""),
        "1" if event_type in TERMINAL_TYPES else "0",
        lease_ms,
        "" if turn is None else json.dumps(turn, separators=(",", ":")),
        "1" if check_lost else "0",
        entry_id,
    ]


def request_digest(message: str) -> str:
    """What an ``Idempotency-Key`` is bound to: the request's message."""
    return hashlib.sha256(message.encode("utf-8")).hexdigest()[:32]


WORKER_LOST = {
    "code": "worker_lost",
    "message": "The agent stopped responding. Please try again.",
}
NOT_STARTED = {
    "code": "not_started",
    "message": "The agent did not start in time. Please try again.",
}

# Shared Lua functions; each script below is this prelude plus its body.
_PRELUDE = """
local stream, meta, conv, records = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, maxlen = ARGV[1], ARGV[2]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function is_finished(status)
  return status == 'completed' or status == 'failed' or status == 'cancelled'
end

-- Tells the stream hubs that the stream has new entries: a sharded pub/sub message on its slot
-- group's channel (same hash tag, so same slot), carrying the stream's key. Redis 6 has neither
-- SPUBLISH nor redis.REDIS_VERSION_NUM: nothing is sent there (the hub is off on Redis 6).
local function notify()
  if redis.REDIS_VERSION_NUM then
    redis.call('SPUBLISH', 'agentstream-notify:' .. string.match(stream, '{[^}]*}'), stream)
  end
end

-- wanted: an id the writer chose (kept across its retries), used when it is above the stream's
-- newest; otherwise (and when absent) Redis picks one. first_noted: the meta hash already holds
-- first_id (any run with a status was queued after it was noted), so it is not set again.
local function add(run, etype, data, ts, wanted, first_noted)
  local seq = redis.call('HINCRBY', meta, 'seq:' .. run, 1) - 1
  local id
  if wanted and wanted ~= '*' then
    id = redis.pcall('XADD', stream, 'MAXLEN', '~', maxlen, wanted,
      'type', etype, 'run', run, 'seq', seq, 'ts', ts, 'data', data)
    if type(id) == 'table' then
      id = nil
    end
  end
  if not id then
    id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*',
      'type', etype, 'run', run, 'seq', seq, 'ts', ts, 'data', data)
  end
  if not first_noted then
    redis.call('HSETNX', meta, 'first_id', id)
  end
  notify()
  return id, seq
end

-- The text of a message.delta's data, still JSON-escaped (escapes never span two pieces, so
-- escaped pieces join into the escaped whole), or nil when it has none. The writer's
-- {"text":"..."} is cut out without decoding; anything else is decoded, never with an error (a
-- script that failed after its XADD would leave the run half-ended).
local function delta_text(data)
  local escaped = string.sub(data, 10, -3)
  if string.sub(data, 1, 9) == '{"text":"' and string.sub(data, -2) == '"}'
      and not string.find(escaped, ',"', 1, true) then
    return escaped
  end
  local ok, decoded = pcall(cjson.decode, data)
  if ok and type(decoded) == 'table' and type(decoded.text) == 'string' then
    return string.sub(cjson.encode(decoded.text), 2, -2)
  end
  return nil
end

-- Writes the record of a run START queued, whose terminal event was just appended (see the
-- module's docstring).
local function keep_record(run, status)
  local found = redis.call('HMGET', meta, 'latest_run', 'latest_start', 'record_ttl',
    'records_kept')
  local start = found[2]
  if found[1] ~= run or not found[3] then
    return
  end
  local entries = redis.call('XRANGE', stream, start, '+')
  if #entries == 0 or entries[1][1] ~= start then
    return
  end
  local events, text, opened = {}, {}, nil
  local function close_text()
    if opened then
      opened[4] = '{"text":"' .. table.concat(text) .. '"}'
      events[#events + 1] = opened
      text, opened = {}, nil
    end
  end
  for _, entry in ipairs(entries) do
    -- Every entry is written as type, run, seq, ts, data (add, START, REPAIR).
    local f = entry[2]
    local etype, erun, seq, ts, data = f[2], f[4], f[6], f[8], f[10]
    if erun == run then
      local piece = etype == 'message.delta' and delta_text(data)
      if piece then
        if piece ~= '' then
          opened = opened or {etype, seq, ts, ''}
          text[#text + 1] = piece
        end
      else
        close_text()
        events[#events + 1] = {etype, seq, ts, data}
      end
    end
  end
  close_text()
  local kept = {}
  for old in string.gmatch(redis.call('HGET', records, 'runs') or '', '%S+') do
    if old ~= run then
      kept[#kept + 1] = old
    end
  end
  kept[#kept + 1] = run
  while #kept > tonumber(found[4]) do
    redis.call('HDEL', records, table.remove(kept, 1))
  end
  redis.call('HSET', records, run, cjson.encode({status = status, start = start, events = events}),
    'runs', table.concat(kept, ' '))
  redis.call('PEXPIRE', records, found[3])
end

local function finish(run, status)
  redis.call('HSET', meta, 'status:' .. run, status)
  redis.call('HDEL', meta, 'lease:' .. run, 'deadline:' .. run)
  if redis.call('HGET', meta, 'active_run') == run then
    redis.call('HDEL', meta, 'active_run')
  end
  keep_record(run, status)
end

local function touch()
  redis.call('PEXPIRE', stream, ttl)
  redis.call('PEXPIRE', meta, ttl)
end

-- The run's lease (running) or start deadline (queued) has passed.
local function is_stale(run, status, now)
  local field
  if status == 'running' then
    field = 'lease:'
  elseif status == 'queued' then
    field = 'deadline:'
  else
    return false
  end
  local limit = tonumber(redis.call('HGET', meta, field .. run) or '0')
  return limit > 0 and now > limit
end

-- Ends the active run if nothing can end it any more; returns that run or false.
local function reap(now)
  local run = redis.call('HGET', meta, 'active_run')
  if not run then
    return false
  end
  local status = redis.call('HGET', meta, 'status:' .. run)
  if is_finished(status) or not status then
    redis.call('HDEL', meta, 'active_run')
    return false
  end
  if not is_stale(run, status, now) then
    return false
  end
  if redis.call('HEXISTS', meta, 'cancel:' .. run) == 1 then
    add(run, 'run.cancelled', '{}', now)
    finish(run, 'cancelled')
  elseif status == 'running' then
    add(run, 'run.failed', [[@WORKER_LOST@]], now)
    finish(run, 'failed')
  else
    add(run, 'run.failed', [[@NOT_STARTED@]], now)
    finish(run, 'failed')
  end
  touch()
  return run
end
"""


def _script(body: str) -> str:
    prelude = _PRELUDE.replace("@WORKER_LOST@", dumps_line(WORKER_LOST)).replace(
        "@NOT_STARTED@", dumps_line(NOT_STARTED)
    )
    return prelude + body


# Appends one event of a run.
# ARGV[3..]: run, attempt ('' = not the entity), write number, type, data, ts, new status
# ('' = unchanged), terminal ('1'/'0'), lease ms (0 = none), turn (JSON, '' = none)
# Returns {id, seq, cancel} or {false, reason} with reason finished | unknown | fenced. Only a
# run.queued may create a run (the HTTP side uses START for that; the stream-log tests use this).
# A replay of the entity's latest write (same attempt and write number: the reply was lost) returns
# the entry already written instead of writing it twice.
# ARGV[13] = '1': the writer keeps its unreplicated writes (replication.py) and wants to know when
# Redis lost some (a failover): then {false, 'lost', <this attempt's latest write still here>}.
# ARGV[14]: the stream id the writer wants ('*': any). A write whose reply a failover took is sent
# again with the same id, so readers who saw it on the old primary see the same entry.
APPEND = _script("""
local run, attempt, write = ARGV[3], ARGV[4], ARGV[5]
-- Every field the checks need, in one read; a cancel request cannot change while this runs.
local found = redis.call('HMGET', meta, 'last:' .. run, 'status:' .. run, 'attempts:' .. run,
  'cancel:' .. run)
local last, status, newest = found[1], found[2], tonumber(found[3] or '0')
local cancel = found[4] and 1 or 0
if attempt ~= '' and last then
  local a, w, id, seq = string.match(last, '^(%S+) (%S+) (%S+) (%S+)$')
  if a == attempt and w == write then
    return {id, tonumber(seq), cancel}
  end
end
if ARGV[13] == '1' and tonumber(write) > 1 then
  local held = last or '0 0'
  local la, lw = string.match(held, '^(%S+) (%S+)')
  la, lw = tonumber(la), tonumber(lw)
  if la < tonumber(attempt) or (la == tonumber(attempt) and lw < tonumber(write) - 1) then
    return {false, 'lost', la == tonumber(attempt) and lw or 0}
  end
end
if not status and ARGV[6] ~= 'run.queued' then
  return {false, 'unknown'}
end
if is_finished(status) then
  return {false, 'finished'}
end
if attempt ~= '' and tonumber(attempt) < newest then
  return {false, 'fenced'}
end
local id, seq = add(run, ARGV[6], ARGV[7], ARGV[8], ARGV[14], status ~= false)
-- The meta fields this append changes, in one write.
local fields = {}
if attempt ~= '' then
  fields[#fields + 1] = 'last:' .. run
  fields[#fields + 1] = attempt .. ' ' .. write .. ' ' .. id .. ' ' .. seq
end
if ARGV[10] == '1' then
  if ARGV[12] ~= '' then
    fields[#fields + 1] = 'turn:' .. run
    fields[#fields + 1] = ARGV[12]
  end
else
  if ARGV[9] ~= '' then
    fields[#fields + 1] = 'status:' .. run
    fields[#fields + 1] = ARGV[9]
  end
  if tonumber(ARGV[11]) > 0 then
    fields[#fields + 1] = 'lease:' .. run
    fields[#fields + 1] = now_ms() + tonumber(ARGV[11])
  end
end
if #fields > 0 then
  redis.call('HSET', meta, unpack(fields))
end
if ARGV[10] == '1' then
  finish(run, ARGV[9])
end
touch()
return {id, seq, cancel}
""")

# The entity begins (or re-begins, after a crash) a run: counts the attempt, takes the lease.
# ARGV[3..]: run, delivery token, lease ms, then run ids whose turns the entity has committed.
# Returns {'begun', attempt} | {'finished', status, turn or false} | {'unknown'}.
# Replayable: the same token returns the same attempt instead of counting another one.
BEGIN = _script("""
local run, token = ARGV[3], ARGV[4]
for i = 6, #ARGV do
  redis.call('HDEL', meta, 'turn:' .. ARGV[i])
end
local status = redis.call('HGET', meta, 'status:' .. run)
if not status then
  return {'unknown'}
end
if is_finished(status) then
  return {'finished', status, redis.call('HGET', meta, 'turn:' .. run)}
end
if redis.call('HGET', meta, 'token:' .. run) == token then
  return {'begun', tonumber(redis.call('HGET', meta, 'attempts:' .. run))}
end
local attempt = redis.call('HINCRBY', meta, 'attempts:' .. run, 1)
redis.call('HSET', meta, 'token:' .. run, token, 'status:' .. run, 'running',
  'lease:' .. run, now_ms() + tonumber(ARGV[5]))
redis.call('HDEL', meta, 'deadline:' .. run)
touch()
return {'begun', attempt}
""")

# Keeps a running run's lease (and both keys' TTL) alive while the model or a tool is slow.
# ARGV[3..]: run, attempt, lease ms.  Returns 1 when a cancel was requested, 0 when not, and -1
# when this attempt may not write any more (the run ended or a newer attempt began).
HEARTBEAT = _script("""
local run = ARGV[3]
if redis.call('HGET', meta, 'status:' .. run) ~= 'running'
    or redis.call('HGET', meta, 'attempts:' .. run) ~= ARGV[4] then
  return -1
end
redis.call('HSET', meta, 'lease:' .. run, now_ms() + tonumber(ARGV[5]))
touch()
return redis.call('HEXISTS', meta, 'cancel:' .. run)
""")

# What START writes for a run, shared with RECREATE (both take START's ARGV[3..13]): takes the run
# lock and writes run.queued at ``wanted`` ('*': an id Redis picks). Returns the id.
_QUEUE = """
local function queue_run(run, key, digest, wanted, now)
  redis.call('HSET', meta, 'seq:' .. run, 1)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, wanted,
    'type', 'run.queued', 'run', run, 'seq', 0, 'ts', ARGV[7], 'data', ARGV[6])
  redis.call('HSETNX', meta, 'first_id', id)
  notify()
  redis.call('HSET', meta, 'active_run', run, 'latest_run', run, 'latest_start', id,
    'status:' .. run, 'queued', 'created:' .. run, ARGV[7],
    'deadline:' .. run, now + tonumber(ARGV[10]), 'record_ttl', ARGV[13],
    'records_kept', ARGV[12])
  if key ~= '' then
    redis.call('HSET', meta, 'idem:' .. key, run .. ' ' .. id .. ' ' .. digest, 'key:' .. run, key)
  end
  -- Only the newest runs keep their fields: the oldest beyond the bound go, with their key.
  local kept = {}
  for old in string.gmatch(redis.call('HGET', meta, 'runs') or '', '%S+') do
    kept[#kept + 1] = old
  end
  kept[#kept + 1] = run
  while #kept > tonumber(ARGV[12]) do
    local old = table.remove(kept, 1)
    local old_key = redis.call('HGET', meta, 'key:' .. old)
    if old_key then
      redis.call('HDEL', meta, 'idem:' .. old_key)
    end
    redis.call('HDEL', meta, 'status:' .. old, 'seq:' .. old, 'created:' .. old,
      'attempts:' .. old, 'token:' .. old, 'last:' .. old, 'lease:' .. old, 'deadline:' .. old,
      'cancel:' .. old, 'turn:' .. old, 'key:' .. old, 'trace:' .. old)
  end
  redis.call('HSET', meta, 'runs', table.concat(kept, ' '))
  touch()
  redis.call('HSETNX', conv, 'created', ARGV[7])
  if ARGV[11] ~= '' then
    redis.call('HSETNX', conv, 'owner', ARGV[11])
  end
  redis.call('HSET', conv, 'updated', ARGV[7])
  redis.call('PEXPIRE', conv, ARGV[8])
  return id
end
"""

# Takes the run lock and writes run.queued, or reports why not. A stale active run is ended first.
# ARGV[3..]: run, idempotency key ('' = none), request digest, data, ts, conversation TTL ms,
# must_exist ('1'/'0'), start deadline ms, owner ('' = none), runs kept (RUN_RECORDS_KEPT),
# run record TTL ms
# Returns {'started', cursor} | {'duplicate', run, cursor} | {'mismatch'} | {'busy', active_run}
# | {'unknown'} (also for a conversation that belongs to another owner)
# Replayable: the run id is new for every request, so finding it as the latest run means this
# request already ran here (its reply was lost and the client retried the command), and the same
# answer is returned: the caller signals the entity once, not reports its own run as busy.
START = _script(
    _QUEUE
    + """
local run, key, digest = ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', meta, 'latest_run') == run then
  return {'started', redis.call('HGET', meta, 'latest_start')}
end
if ARGV[9] == '1' and (redis.call('EXISTS', conv) == 0
    or (redis.call('HGET', conv, 'owner') or '') ~= ARGV[11]) then
  return {'unknown'}
end
if key ~= '' then
  local previous = redis.call('HGET', meta, 'idem:' .. key)
  if previous then
    local prun, cursor, pdigest = string.match(previous, '^(%S+) (%S+) (%S+)$')
    if pdigest ~= digest then
      return {'mismatch'}
    end
    return {'duplicate', prun, cursor}
  end
end
local now = now_ms()
reap(now)
local active = redis.call('HGET', meta, 'active_run')
if active then
  return {'busy', active}
end
local id = queue_run(run, key, digest, '*', now)
return {'started', id}
"""
)


# Writes again a queued run a failover lost (requeue.py), from what its entity signal carries.
# KEYS: START's four, then the conversation's deleted mark. ARGV[3..13]: as START (must_exist =
# '1' for a follow-up message), then the original run.queued id, the window (ms: the start
# deadline) within which a run missing from Redis can only have been lost, the agent ('' = keep).
# Returns {'recreated'} | {'present'} (the run is there: begin it) | {reason} with reason
# deleted | expired | unknown | superseded (nothing written).
RECREATE = _script(
    _QUEUE
    + """
local run, key, digest, wanted = ARGV[3], ARGV[4], ARGV[5], ARGV[14]
if redis.call('HEXISTS', meta, 'status:' .. run) == 1 then
  return {'present'}
end
if redis.call('EXISTS', KEYS[5]) == 1 then
  return {'deleted'}
end
local function parsed(id)
  local ms, n = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(n)
end
local wanted_ms, wanted_n = parsed(wanted)
local now = now_ms()
if now - wanted_ms > tonumber(ARGV[15]) then
  return {'expired'}
end
-- A follow-up message whose conversation record is gone: the conversation expired or was deleted.
local recorded = redis.call('EXISTS', conv) == 1
if (ARGV[9] == '1' and not recorded)
    or (recorded and (redis.call('HGET', conv, 'owner') or '') ~= ARGV[11]) then
  return {'unknown'}
end
reap(now)
if redis.call('HGET', meta, 'active_run') then
  return {'superseded'}
end
local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
if top then
  local top_ms, top_n = parsed(top[1])
  if top_ms > wanted_ms or (top_ms == wanted_ms and top_n >= wanted_n) then
    return {'superseded'}
  end
end
if key ~= '' and redis.call('HEXISTS', meta, 'idem:' .. key) == 1 then
  return {'superseded'}
end
queue_run(run, key, digest, wanted, now)
if ARGV[16] ~= '' then
  redis.call('HSETNX', conv, 'agent', ARGV[16])
end
return {'recreated'}
"""
)

# Requests a cancel. A run nothing will end any more (lease or start deadline passed) is ended at
# once with run.cancelled. ARGV[3..]: run, request token (new for every request).
# Returns the run's status ('' when the run is unknown), or 'ended' when this call ended it.
# Replayable: the cancel flag keeps ``<token> <answer>``, so the same request run again (its reply
# was lost) gets its first answer, not ``cancelled`` for the run it ended itself.
CANCEL = _script("""
local run, token = ARGV[3], ARGV[4]
local previous = redis.call('HGET', meta, 'cancel:' .. run)
if previous then
  local ptoken, answer = string.match(previous, '^(%S+) (%S+)$')
  if ptoken == token then
    return answer
  end
end
local status = redis.call('HGET', meta, 'status:' .. run)
if not status then
  return ''
end
if is_finished(status) then
  return status
end
redis.call('HSET', meta, 'cancel:' .. run, token .. ' ' .. status)
if reap(now_ms()) == run then
  redis.call('HSET', meta, 'cancel:' .. run, token .. ' ended')
  return 'ended'
end
return status
""")

# Ends the active run if its lease or start deadline has passed (any request that meets the
# conversation calls this). Returns the ended run, 0 when there was nothing to end, or -1 when the
# stream is gone (deleted or expired: a reader waiting on it has nothing more to wait for).
REAP = _script("""
if redis.call('EXISTS', stream) == 0 then
  return -1
end
return reap(now_ms()) or 0
""")

# First step of deleting a conversation: ends an active run with run.cancelled, so live readers
# finish, before the keys go. Returns 0 when there is no such conversation, else {1} or, when it
# ended a run, {1, id, run, seq}: the run.cancelled entry, which the deleted mark then keeps for
# a live reader that had not read it before the stream went.
# ARGV[3]: ts
END_FOR_DELETE = _script("""
if redis.call('EXISTS', conv) == 0 and redis.call('EXISTS', meta) == 0 then
  return 0
end
local run = redis.call('HGET', meta, 'active_run')
if run then
  local status = redis.call('HGET', meta, 'status:' .. run)
  if status and not is_finished(status) then
    local id, seq = add(run, 'run.cancelled', '{}', ARGV[3])
    finish(run, 'cancelled')
    return {1, id, run, tostring(seq)}
  end
end
return {1}
""")

# After a failover lost some of the entity's latest writes: writes them again, with their original
# stream ids and seq, so every cursor a reader holds stays valid, and restores what they had set
# in the meta hash (the attempt, the last write, status, lease, the terminal event's turn).
# ARGV[3..]: run, attempt, delivery token, lease ms, then the writes as JSON:
# [[write, id, seq, type, data, ts, new status, terminal '1'/'0', turn], ...] in order.
# Returns {restored count} | {false, 'fenced' | 'finished' | 'unknown'}. An id no longer above
# the stream's newest (something else was appended meanwhile) is a script error: not repairable.
REPAIR = _script("""
local run, attempt, token = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local status = redis.call('HGET', meta, 'status:' .. run)
if not status then
  return {false, 'unknown'}
end
local newest = tonumber(redis.call('HGET', meta, 'attempts:' .. run) or '0')
if newest > attempt then
  return {false, 'fenced'}
end
if is_finished(status) then
  return {false, 'finished'}
end
if newest < attempt then
  redis.call('HSET', meta, 'attempts:' .. run, attempt, 'token:' .. run, token,
    'status:' .. run, 'running')
  redis.call('HDEL', meta, 'deadline:' .. run)
end
local held = redis.call('HGET', meta, 'last:' .. run) or '0 0'
local la, lw = string.match(held, '^(%S+) (%S+)')
la, lw = tonumber(la), tonumber(lw)
local restored, finished = 0, false
for _, w in ipairs(cjson.decode(ARGV[7])) do
  if la < attempt or tonumber(w[1]) > lw then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, w[2],
      'type', w[4], 'run', run, 'seq', w[3], 'ts', w[6], 'data', w[5])
    notify()
    redis.call('HSETNX', meta, 'first_id', w[2])
    redis.call('HSET', meta, 'seq:' .. run, tonumber(w[3]) + 1,
      'last:' .. run, attempt .. ' ' .. w[1] .. ' ' .. w[2] .. ' ' .. w[3])
    if w[7] ~= '' then
      redis.call('HSET', meta, 'status:' .. run, w[7])
    end
    if w[8] == '1' then
      finish(run, w[7])
      finished = true
      if w[9] ~= '' then
        redis.call('HSET', meta, 'turn:' .. run, w[9])
      end
    end
    restored = restored + 1
  end
end
if not finished then
  redis.call('HSET', meta, 'lease:' .. run, now_ms() + tonumber(ARGV[6]))
end
touch()
return {restored}
""")
