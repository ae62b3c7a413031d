"""The Lua scripts of the Redis conversation store.

Each script is one atomic round trip: either all of its writes happen or none
do. They are loaded once (``SCRIPT LOAD``) and called by SHA (``EVALSHA``),
loaded again when the server answers ``NOSCRIPT`` (after a restart or a
``SCRIPT FLUSH``).

Per-user keys (``KEYS`` that carry the ``{user}`` hash tag) and the shared
outbox keys meet only in :data:`COMMIT`; see the store's module docstring for
what Redis Cluster would need.

Numbers that must keep their precision (unix timestamps) are compared with
``tonumber`` but stored as the string the caller sent, because Lua's
``tostring`` keeps only 14 significant digits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# The conversation fields, in the order BEGIN and LOAD return them.
FIELDS = (
    "state",
    "data",
    "version",
    "last_inbound",
    "last_active",
    "opted_out",
    "not_on_whatsapp",
)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script and its SHA1 (what ``EVALSHA`` calls it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


# Lua for COMMIT and ENQUEUE: append the (not_before or "", message JSON)
# pairs ARGV[first..last] to the outbox. Messages for now go to the stream,
# numbered in the user's send sequence (the order hash, which lives ``ttl``
# ms); later ones wait in the delayed set, unnumbered.
_APPEND = """
local count = 0
for j = first, last, 2 do
  if ARGV[j] == '' then count = count + 1 end
end
local seq = 0
if count > 0 then
  seq = redis.call('HINCRBY', order, 'next', count) - count
  redis.call('PEXPIRE', order, ttl)
end
for j = first, last, 2 do
  if ARGV[j] == '' then
    seq = seq + 1
    redis.call('XADD', stream, '*', 'm', ARGV[j + 1], 's', seq)
  else
    redis.call('ZADD', delayed, ARGV[j], ARGV[j + 1])
  end
end
"""

# KEYS: conv, lock, waiting, [seen]
# ARGV: token, lock_ttl_ms, inbound_at or "", conversation_ttl_ms
# -> "d" .. ("in_progress"|"done") | "b" .. pttl_ms | the FIELDS as stored after
#    this call (an array; nil for a missing field)
BEGIN = Script(
    "begin",
    """
local conv, lock, waiting, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if seen then
  local mark = redis.call('GET', seen)
  if mark then return 'd' .. mark end
end
if not redis.call('SET', lock, ARGV[1], 'NX', 'PX', ARGV[2]) then
  local pttl = redis.call('PTTL', lock)
  -- Ask the holder's commit to publish a wake-up (it lives at least as long
  -- as the lock plus one renewal; a waiter that outlives it re-arms it).
  redis.call('SET', waiting, '1', 'PX', math.max(pttl, 1) + tonumber(ARGV[2]))
  return 'b' .. pttl
end
if seen then redis.call('SET', seen, 'in_progress', 'PX', ARGV[2]) end
local f = redis.call('HMGET', conv, 'state', 'data', 'version', 'last_inbound',
                     'last_active', 'opted_out', 'not_on_whatsapp')
if ARGV[3] ~= '' and (not f[4] or tonumber(ARGV[3]) > tonumber(f[4])) then
  redis.call('HSET', conv, 'last_inbound', ARGV[3])
  redis.call('PEXPIRE', conv, ARGV[4])
  f[4] = ARGV[3]
end
return f
""",
)

# KEYS: conv, lock, waiting, outbox stream, delayed zset, order hash, [seen]
# ARGV: 1 token, 2 conversation_ttl_ms, 3 done_ttl_ms, 4 unlock channel,
#       5 wake-up payload, 6 nset, 7 ndel, 8 nout, then nset field/value pairs
#       to set in the conversation, ndel fields to delete from it, and nout
#       (not_before or "" for now, message JSON) pairs for the outbox.
# The caller computes the conversation's changes against what BEGIN read: the
# lock (checked first) means nobody else wrote it since. Each message for now
# gets the user's next send sequence number (stream field "s"; see READY).
# -> 1 committed | 0 the lock is not ours (nothing written)
COMMIT = Script(
    "commit",
    """
local conv, lock, waiting, stream, delayed, order, seen =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if redis.call('GET', lock) ~= ARGV[1] then return 0 end
local nset, ndel, nout = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 9
if nset > 0 then redis.call('HSET', conv, unpack(ARGV, i, i + 2 * nset - 1)) end
i = i + 2 * nset
if ndel > 0 then redis.call('HDEL', conv, unpack(ARGV, i, i + ndel - 1)) end
i = i + ndel
redis.call('PEXPIRE', conv, ARGV[2])
if seen then redis.call('SET', seen, 'done', 'PX', ARGV[3]) end
local first, last, ttl = i, i + 2 * nout - 1, ARGV[2]
"""
    + _APPEND
    + """
-- The lock is there (checked above): 2 deleted means a turn was waiting.
if redis.call('DEL', lock, waiting) == 2 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
""",
)

# KEYS: outbox stream, delayed zset, order hash (of the one user the messages go to)
# ARGV: conversation_ttl_ms, then (not_before or "", message JSON) pairs
ENQUEUE = Script(
    "enqueue",
    """
local stream, delayed, order = KEYS[1], KEYS[2], KEYS[3]
local first, last, ttl = 2, #ARGV, ARGV[1]
"""
    + _APPEND
    + """
return 1
""",
)

# KEYS: lock, [seen]
# ARGV: token, lock_ttl_ms
# -> 1 renewed | 0 lost
RENEW = Script(
    "renew",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[2] and redis.call('GET', KEYS[2]) == 'in_progress' then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
""",
)

# KEYS: lock, waiting, [seen]
# ARGV: token, unlock channel, wake-up payload
# -> 1 released | 0 the lock was not ours (nothing changed)
ABORT = Script(
    "abort",
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if KEYS[3] and redis.call('GET', KEYS[3]) == 'in_progress' then
  redis.call('DEL', KEYS[3])
end
if redis.call('DEL', KEYS[1], KEYS[2]) == 2 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
""",
)

# KEYS: outbox stream
# ARGV: group, consumer, min_idle_ms, count
# -> {{id, message JSON, deliveries, send sequence number or ""}, ...}
CLAIM = Script(
    "claim",
    """
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local want = tonumber(ARGV[4])
local claimed = {}
local cursor = '0-0'
-- XAUTOCLAIM scans a bounded slice of the pending list per call; a few calls
-- find idle entries behind busy ones without letting the script run long.
for _ = 1, 10 do
  local found = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], cursor,
                           'COUNT', want - #claimed)
  cursor = found[1]
  for _, entry in ipairs(found[2]) do
    local fields = entry[2]
    if fields then
      local message, seq
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then message = fields[i + 1] end
        if fields[i] == 's' then seq = fields[i + 1] end
      end
      local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], message or '', pending[1][4], seq or ''}
    else
      redis.call('XACK', stream, group, entry[1])
    end
  end
  if cursor == '0-0' or #claimed >= want then break end
end
return claimed
""",
)

# KEYS: delayed zset, outbox stream
# ARGV: now, limit
# -> how many moved
RELEASE_DUE = Script(
    "release_due",
    """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', message)
  redis.call('ZREM', KEYS[1], message)
end
return #due
""",
)

# KEYS: sent record
# ARGV: record JSON, sent_ttl_ms (used only when the record had expired)
UPDATE_SENT = Script(
    "update_sent",
    """
if redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL') then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
""",
)

# KEYS: outbox stream
# ARGV: group, consumer, count
# -> flat array: entry id, message JSON, send sequence number or "", entry id, ...
READ = Script(
    "read",
    """
local found = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
local out = {}
if found then
  for _, entry in ipairs(found[1][2]) do
    local fields, message, seq = entry[2], nil, ''
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then message = fields[i + 1] end
      if fields[i] == 's' then seq = fields[i + 1] end
    end
    if message then
      out[#out + 1] = entry[1]
      out[#out + 1] = message
      out[#out + 1] = seq
    end
  end
end
return out
""",
)

# KEYS: outbox stream
# ARGV: group, sent-record key prefix, sent_ttl_ms, n, then n entry ids to
#       acknowledge and delete, m, then m (order hash key, send sequence
#       number) pairs the provider answered, then (messageId, record JSON) pairs
# The sent-record and order keys are passed or built here, not declared: like
# the outbox itself the sent records are shared, not per-user, keys.
# -> 1 | 0 when the group was gone (the records were still written)
ACK = Script(
    "ack",
    """
local n = tonumber(ARGV[4])
local m = tonumber(ARGV[5 + n])
for j = 6 + n, 5 + n + 2 * m, 2 do
  -- An order hash that expired stays gone: its user's next messages go as they come.
  local done = redis.call('HMGET', ARGV[j], 'next', 'done')
  if done[1] and tonumber(ARGV[j + 1]) > (tonumber(done[2]) or 0) then
    redis.call('HSET', ARGV[j], 'done', ARGV[j + 1])
  end
end
for j = 6 + n + 2 * m, #ARGV, 2 do
  redis.call('SET', ARGV[2] .. ARGV[j], ARGV[j + 1], 'PX', ARGV[3])
end
if n == 0 then return 1 end
local ok = pcall(redis.call, 'XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + n))
redis.call('XDEL', KEYS[1], unpack(ARGV, 5, 4 + n))
if ok then return 1 end
return 0
""",
)

# ARGV: (order hash key, send sequence number or "") pairs, in outbox order
# -> one 1 (send it now) or 0 (an earlier message to the same user is not
#    answered yet) per pair. Messages to one user are numbered at commit
#    (COMMIT); the sender that reads number k sends it only once the provider
#    answered k - 1, whichever process sent that. A user whose order hash is
#    gone (expired) and messages without a number (retries) go at once.
READY = Script(
    "ready",
    """
local verdicts, expect, blocked = {}, {}, {}
for j = 1, #ARGV, 2 do
  local key, seq, verdict = ARGV[j], tonumber(ARGV[j + 1]), 1
  if seq then
    if blocked[key] then
      verdict = 0
    else
      local want = expect[key]
      if want == nil then
        local state = redis.call('HMGET', key, 'next', 'done')
        if state[1] then want = (tonumber(state[2]) or 0) + 1 end
      end
      if want ~= nil and seq > want then
        verdict = 0
        blocked[key] = true
      else
        expect[key] = seq + 1
      end
    end
  end
  verdicts[#verdicts + 1] = verdict
end
return verdicts
""",
)

ALL = (BEGIN, COMMIT, RENEW, ABORT, CLAIM, RELEASE_DUE, UPDATE_SENT, READ, ACK, READY, ENQUEUE)
