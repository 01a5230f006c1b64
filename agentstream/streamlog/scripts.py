"""Lua scripts that keep each stream write to one atomic round trip.

Both scripts take ``KEYS[1]`` = the stream and ``KEYS[2]`` = the conversation's meta hash (same
hash slot). Fields of the meta hash:

- ``seq:<run>``      next sequence number of the run (so ``seq`` has no gaps, across attempts too)
- ``status:<run>``   queued | running | completed | failed | cancelled
- ``created:<run>``  ms epoch the run was queued
- ``attempts:<run>`` how many times the entity started the run
- ``cancel:<run>``   present when a cancel was requested
- ``active_run``     the run holding the conversation's run lock
- ``latest_run`` / ``latest_start``  the newest run and the stream id of its ``run.queued``
- ``first_id``       the first stream id ever written (to detect trimming)
- ``idem:<key>``     ``<run> <cursor>`` for an ``Idempotency-Key`` already used
"""

# Appends one event. Refuses (returns {false}) once the run has a terminal status, so a duplicate
# delivery can never write after the end. A terminal event releases the run lock in the same step,
# so a client that has seen the end can send its next message at once.
# ARGV: run, type, data, ts, ttl_ms, maxlen, new_status ('' = unchanged), terminal ('1'/'0')
APPEND = """
local run = ARGV[1]
local status = redis.call('HGET', KEYS[2], 'status:' .. run)
if status == 'completed' or status == 'failed' or status == 'cancelled' then
  return {false}
end
local seq = redis.call('HINCRBY', KEYS[2], 'seq:' .. run, 1) - 1
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*',
  'type', ARGV[2], 'run', run, 'seq', seq, 'ts', ARGV[4], 'data', ARGV[3])
redis.call('HSETNX', KEYS[2], 'first_id', id)
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'status:' .. run, ARGV[7])
end
if ARGV[8] == '1' and redis.call('HGET', KEYS[2], 'active_run') == run then
  redis.call('HDEL', KEYS[2], 'active_run')
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {id, seq, redis.call('HEXISTS', KEYS[2], 'cancel:' .. run)}
"""

# Takes the run lock and writes run.queued, or reports why not.
# ARGV: run, idempotency key ('' = none), data, ts, ttl_ms, maxlen, must_exist ('1'/'0')
# Returns {'started', cursor} | {'duplicate', run, cursor} | {'busy', active_run} | {'unknown'}
START = """
local run = ARGV[1]
if ARGV[7] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  return {'unknown'}
end
if ARGV[2] ~= '' then
  local previous = redis.call('HGET', KEYS[2], 'idem:' .. ARGV[2])
  if previous then
    local sep = string.find(previous, ' ', 1, true)
    return {'duplicate', string.sub(previous, 1, sep - 1), string.sub(previous, sep + 1)}
  end
end
local active = redis.call('HGET', KEYS[2], 'active_run')
if active then
  return {'busy', active}
end
redis.call('HSET', KEYS[2], 'seq:' .. run, 1)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*',
  'type', 'run.queued', 'run', run, 'seq', 0, 'ts', ARGV[4], 'data', ARGV[3])
redis.call('HSETNX', KEYS[2], 'first_id', id)
redis.call('HSET', KEYS[2], 'active_run', run, 'latest_run', run, 'latest_start', id,
  'status:' .. run, 'queued', 'created:' .. run, ARGV[4])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[2], 'idem:' .. ARGV[2], run .. ' ' .. id)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'started', id}
"""

# Sets the cancel flag of a run that has not finished.
# ARGV: run.  Returns the run's status ('' when the run is unknown).
CANCEL = """
local status = redis.call('HGET', KEYS[2], 'status:' .. ARGV[1])
if not status then
  return ''
end
if status == 'queued' or status == 'running' then
  redis.call('HSET', KEYS[2], 'cancel:' .. ARGV[1], '1')
end
return status
"""
