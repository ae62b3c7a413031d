-- BEGIN: dedupe, take the user's lock, move the window, load.
-- KEYS: conv, lock, waiting, seen
-- ARGV: token, lock_ttl_ms, inbound_at or "", conversation_ttl_ms, dedupe key or ""
-- -> "d" .. ("in_progress"|"done") | "b" .. pttl_ms | the conversation hash as stored
--    after this call (HGETALL's field, value, ... array)
local conv, lock, waiting, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local key = ARGV[5]
if key ~= '' and redis.call('LPOS', seen, key) then return 'ddone' end
-- Take the lock unless it is taken: then GET's answer is its holder.
local held = redis.call('SET', lock, ARGV[1] .. ' ' .. key, 'NX', 'PX', ARGV[2], 'GET')
if held then
  -- The lock names the key its turn handles: the same message, still running.
  if key ~= '' and string.sub(held, (string.find(held, ' ', 1, true) or #held) + 1) == key then
    return 'din_progress'
  end
  local pttl = redis.call('PTTL', lock)
  -- Ask the holder's commit to publish a wake-up (it lives at least as long
  -- as the lock plus one renewal; a waiter that outlives it re-arms it).
  redis.call('SET', waiting, '1', 'PX', math.max(pttl, 1) + tonumber(ARGV[2]))
  return 'b' .. pttl
end
local f = redis.call('HGETALL', conv)
if ARGV[3] == '' then return f end
local inbound = #f + 2
for i = 1, #f, 2 do
  if f[i] == 'last_inbound' then inbound = i + 1 break end
end
if not f[inbound] or tonumber(ARGV[3]) > tonumber(f[inbound]) then
  redis.call('HSET', conv, 'last_inbound', ARGV[3])
  redis.call('PEXPIRE', conv, ARGV[4])
  f[inbound - 1], f[inbound] = 'last_inbound', ARGV[3]
end
return f
