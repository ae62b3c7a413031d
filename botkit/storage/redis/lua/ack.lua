-- ACK: acknowledge and delete one shard's entries, record the sent messages
-- in their users' keys, move the users' send orders.
-- KEYS: 1 the shard's outbox stream, 2 its attempts hash, then per user u
--       (0-based) of the shard in this call: conversation hash (3 + 2u, its send
--       order), refs list (4 + 2u)
-- ARGV: 1 group, 2 sent_ttl_ms, 3 records kept per user, 4 n, then n entry
--       ids to acknowledge and delete, then m, m (user, send sequence number)
--       pairs the provider answered, then r, r (user, messageId, record JSON)
-- -> 1 | 0 when the group was gone (the records were still written)
local n = tonumber(ARGV[4])
local i = 5 + n
local m = tonumber(ARGV[i])
i = i + 1
for _ = 1, m do
  -- A send order that expired stays gone: its user's next messages go as they come.
  local conv = KEYS[3 + 2 * tonumber(ARGV[i])]
  local done = redis.call('HMGET', conv, 'next_seq', 'done_seq')
  if done[1] and tonumber(ARGV[i + 1]) > (tonumber(done[2]) or 0) then
    redis.call('HSET', conv, 'done_seq', ARGV[i + 1])
  end
  i = i + 2
end
local r = tonumber(ARGV[i])
i = i + 1
for _ = 1, r do
  remember(KEYS[4 + 2 * tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ARGV[2], tonumber(ARGV[3]))
  i = i + 3
end
if n == 0 then return 1 end
local ok = pcall(redis.call, 'XACK', KEYS[1], ARGV[1], unpack(ARGV, 5, 4 + n))
redis.call('XDEL', KEYS[1], unpack(ARGV, 5, 4 + n))
redis.call('HDEL', KEYS[2], unpack(ARGV, 5, 4 + n))
if ok then return 1 end
return 0
