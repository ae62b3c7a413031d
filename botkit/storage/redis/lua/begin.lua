-- BEGIN: dedupe, take the user's lock, move the window, load.
-- KEYS: conv, lock, waiting, [seen]
-- ARGV: token, lock_ttl_ms, inbound_at or "", conversation_ttl_ms
-- -> "d" .. ("in_progress"|"done") | "b" .. pttl_ms | the FIELDS as stored after
--    this call (an array; nil for a missing field)
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
local f = redis.call('HMGET', conv, unpack(FIELDS))
local inbound = FIELD_INDEX.last_inbound
if ARGV[3] ~= '' and (not f[inbound] or tonumber(ARGV[3]) > tonumber(f[inbound])) then
  redis.call('HSET', conv, 'last_inbound', ARGV[3])
  redis.call('PEXPIRE', conv, ARGV[4])
  f[inbound] = ARGV[3]
end
return f
