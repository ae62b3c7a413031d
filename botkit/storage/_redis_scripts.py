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


# KEYS: conv, lock, waiting, [seen]
# ARGV: token, lock_ttl_ms, inbound_at or "", conversation_ttl_ms
# -> {"dup", "in_progress"|"done"} | {"busy", pttl_ms} | {"ok", {fields...}}
BEGIN = Script(
    "begin",
    """
local conv, lock, waiting, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if seen then
  local mark = redis.call('GET', seen)
  if mark then return {'dup', mark} end
end
if not redis.call('SET', lock, ARGV[1], 'NX', 'PX', ARGV[2]) then
  local pttl = redis.call('PTTL', lock)
  -- Ask the holder's commit to publish a wake-up (it lives at least as long
  -- as the lock plus one renewal; a waiter that outlives it re-arms it).
  redis.call('SET', waiting, '1', 'PX', math.max(pttl, 1) + tonumber(ARGV[2]))
  return {'busy', pttl}
end
if seen then redis.call('SET', seen, 'in_progress', 'PX', ARGV[2]) end
if ARGV[3] ~= '' then
  local last = redis.call('HGET', conv, 'last_inbound')
  if not last or tonumber(ARGV[3]) > tonumber(last) then
    redis.call('HSET', conv, 'last_inbound', ARGV[3])
  end
end
redis.call('PEXPIRE', conv, ARGV[4])
return {'ok', redis.call('HMGET', conv, 'state', 'data', 'version', 'last_inbound',
                         'last_active', 'opted_out', 'not_on_whatsapp')}
""",
)

# KEYS: conv, lock, waiting, outbox stream, delayed zset, [seen]
# ARGV: 1 token, 2 save "1"|"0", 3 state ("" = none, else "s" .. state), 4 data JSON,
#       5 last_inbound or "", 6 last_active or "", 7 opted_out, 8 not_on_whatsapp,
#       9 conversation_ttl_ms, 10 done_ttl_ms, 11 unlock channel, 12 wake-up payload,
#       13.. pairs of (not_before or "" for now, message JSON)
# -> 1 committed | 0 the lock is not ours (nothing written)
COMMIT = Script(
    "commit",
    """
local conv, lock, waiting, stream, delayed, seen =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('GET', lock) ~= ARGV[1] then return 0 end
if ARGV[2] == '1' then
  local stored = redis.call('HMGET', conv, 'version', 'last_inbound', 'state', 'last_active')
  local inbound = ARGV[5]
  if stored[2] and (inbound == '' or tonumber(stored[2]) > tonumber(inbound)) then
    inbound = stored[2]
  end
  local set = {'version', (tonumber(stored[1]) or 0) + 1, 'data', ARGV[4],
               'opted_out', ARGV[7], 'not_on_whatsapp', ARGV[8]}
  local unset = {}
  local function put(name, value, was)
    if value then
      set[#set + 1] = name
      set[#set + 1] = value
    elseif was then
      unset[#unset + 1] = name
    end
  end
  put('state', ARGV[3] ~= '' and string.sub(ARGV[3], 2) or nil, stored[3])
  put('last_inbound', inbound ~= '' and inbound or nil, stored[2])
  put('last_active', ARGV[6] ~= '' and ARGV[6] or nil, stored[4])
  redis.call('HSET', conv, unpack(set))
  if #unset > 0 then redis.call('HDEL', conv, unpack(unset)) end
end
redis.call('PEXPIRE', conv, ARGV[9])
if seen then redis.call('SET', seen, 'done', 'PX', ARGV[10]) end
for i = 13, #ARGV, 2 do
  if ARGV[i] == '' then
    redis.call('XADD', stream, '*', 'm', ARGV[i + 1])
  else
    redis.call('ZADD', delayed, ARGV[i], ARGV[i + 1])
  end
end
redis.call('DEL', lock)
if redis.call('DEL', waiting) == 1 then redis.call('PUBLISH', ARGV[11], ARGV[12]) end
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
redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
""",
)

# KEYS: outbox stream
# ARGV: group, consumer, min_idle_ms, count
# -> {{id, message JSON, deliveries}, ...}
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
      local message
      for i = 1, #fields, 2 do
        if fields[i] == 'm' then message = fields[i + 1] end
      end
      local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
      claimed[#claimed + 1] = {entry[1], message or '', pending[1][4]}
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

ALL = (BEGIN, COMMIT, RENEW, ABORT, CLAIM, RELEASE_DUE, UPDATE_SENT)
