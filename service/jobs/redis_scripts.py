"""The Lua scripts of the Redis job backend.

Every multi-key change is one script, so a reader never sees half a transition, and the queue bound,
idempotency check and enqueue are atomic across replicas. Each comment lists the script's KEYS and
ARGV in the order the callers pass them (keys from ``service.jobs.redis_keys.JobKeys``). Per-job
event streams are capped (``XADD MAXLEN ~ 32``): they only need the few transitions of one job, and the
cap bounds a pathological retry loop.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# KEYS: stream, queued bytes, job hash, job events, [idempotency key]
# ARGV: group, max_queue, ttl_ms, job_id, pending record JSON, max_bytes, image bytes, then the stream
# entry's field/value pairs.
# Returns {"dup", job_id} | {"full", waiting} | {"bytes", waiting} | {"new", waiting}.
SUBMIT = """
if #KEYS == 5 then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {'dup', existing} end
end
local length = redis.call('XLEN', KEYS[1])
local waiting = length - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[2]) then return {'full', tostring(waiting)} end
if length == 0 then redis.call('SET', KEYS[2], 0) end
local queued = tonumber(redis.call('GET', KEYS[2]) or '0')
if queued + tonumber(ARGV[7]) > tonumber(ARGV[6]) then return {'bytes', tostring(waiting)} end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[3], 'status', 'pending', 'record', ARGV[5], 'attempts', 0)
if #KEYS == 5 then
  redis.call('HSET', KEYS[3], 'idem', KEYS[5])
  redis.call('SET', KEYS[5], ARGV[4], 'PX', ttl)
end
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 32, '*', 'record', ARGV[5])
redis.call('PEXPIRE', KEYS[4], ttl)
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('INCRBY', KEYS[2], ARGV[7])
return {'new', tostring(waiting + 1)}
"""

# KEYS: job hash, job events, [idempotency key]
# ARGV: processing record JSON, worker, ttl_ms, max_attempts
# Returns attempts (>= 1), -1 (job expired), -2 (already final), -3 (attempts exhausted).
START = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == 'completed' or status == 'failed' then return -2 end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > tonumber(ARGV[4]) then return -3 end
redis.call('HSET', KEYS[1], 'status', 'processing', 'record', ARGV[1], 'worker', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 32, '*', 'record', ARGV[1])
local ttl = tonumber(ARGV[3])
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return attempts
"""

# Acknowledges and deletes a stream entry, taking its image's bytes off the queued total (once: only
# when this call deleted it). Every script that removes an entry starts this way.
# KEYS: stream, queued bytes; ARGV: group, entry id, image bytes
ACK = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then redis.call('DECRBY', KEYS[2], ARGV[3]) end
return 1
"""
_REMOVE_ENTRY = """
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then redis.call('DECRBY', KEYS[2], ARGV[3]) end
"""

# KEYS: stream, queued bytes, job hash, job events, [idempotency key]
# ARGV: group, entry id, image bytes, final record JSON, status, worker, ttl_ms
# Acknowledges (and deletes) the entry in the same step, so a stored result never has a pending entry.
# Returns 1 when this write is the job's one final result, 0 when another worker's already is, -1 when expired.
FINISH = (
    _REMOVE_ENTRY
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
if redis.call('HSETNX', KEYS[3], 'final', ARGV[6]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'status', ARGV[5], 'record', ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 32, '*', 'record', ARGV[4])
local ttl = tonumber(ARGV[7])
for i = 3, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""
)

# Hands a job this process will not run (it is draining) back to the queue at once, instead of leaving
# it for reclaim after the visibility timeout: a fresh entry replaces the delivered one.
# KEYS: stream, queued bytes, job hash, job events, [idempotency key]
# ARGV: group, delivered entry id, image bytes, pending record JSON, ttl_ms, then the entry's field/value pairs.
# Returns 1 when handed back, 0 when the job already has its final result or expired.
RELEASE = (
    _REMOVE_ENTRY
    + """
local status = redis.call('HGET', KEYS[3], 'status')
if not status or status == 'completed' or status == 'failed' then return 0 end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('INCRBY', KEYS[2], ARGV[3])
if status == 'processing' then
  redis.call('HSET', KEYS[3], 'status', 'pending', 'record', ARGV[4])
  redis.call('HINCRBY', KEYS[3], 'attempts', -1)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', 32, '*', 'record', ARGV[4])
end
local ttl = tonumber(ARGV[5])
for i = 3, #KEYS do redis.call('PEXPIRE', KEYS[i], ttl) end
return 1
"""
)

# The current record and the id of the last event, read atomically: watch() continues after that id.
# KEYS: job hash, job events
SNAPSHOT = """
local record = redis.call('HGET', KEYS[1], 'record')
if not record then return false end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
local id = '0-0'
if #last > 0 then id = last[1][1] end
return {record, id}
"""


class JobScripts:
    """The scripts registered on one client (redis-py runs each by SHA and re-sends it after a restart)."""

    def __init__(self, redis: Redis) -> None:
        self.submit: AsyncScript = redis.register_script(SUBMIT)
        self.start: AsyncScript = redis.register_script(START)
        self.finish: AsyncScript = redis.register_script(FINISH)
        self.release: AsyncScript = redis.register_script(RELEASE)
        self.ack: AsyncScript = redis.register_script(ACK)
        self.snapshot: AsyncScript = redis.register_script(SNAPSHOT)
