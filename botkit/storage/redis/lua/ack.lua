-- ACK: acknowledge and delete entries, record sent messages, move send orders.
-- KEYS: outbox stream
-- ARGV: group, sent-record key prefix, sent_ttl_ms, n, then n entry ids to
--       acknowledge and delete, m, then m (order hash key, send sequence
--       number) pairs the provider answered, then (messageId, record JSON) pairs
-- The sent-record and order keys are passed or built here, not declared: like
-- the outbox itself the sent records are shared, not per-user, keys.
-- -> 1 | 0 when the group was gone (the records were still written)
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
