-- ATTEMPT: just before a sender posts entries to the provider: of the given ids,
-- those the consumer still holds (another consumer may have claimed some),
-- each with its idle time restarted (nobody claims it while the send lasts) and
-- marked with the time of the attempt (server time, ms): whoever takes it over
-- later knows it may be at the provider, and since when. ack.lua clears the mark.
-- One call covers one shard on Redis Cluster (its keys share a slot), every
-- shard a batch touches elsewhere.
-- KEYS: per shard, its outbox stream then its attempts hash
-- ARGV: 1 group, 2 consumer, 3 the attempts hash's TTL in ms, then per shard
--       (in KEYS' order) the count of its ids, then the ids
-- -> per shard, the count of its ids still held by the consumer, then those
--    ids, now marked
local group, consumer, ttl = ARGV[1], ARGV[2], ARGV[3]
local now = redis.call('TIME')
local at = string.format('%d', now[1] * 1000 + math.floor(now[2] / 1000))
local held, a = {}, 4
for k = 1, #KEYS, 2 do
  local stream, attempts = KEYS[k], KEYS[k + 1]
  local n, place, count = tonumber(ARGV[a]), #held + 1, 0
  held[place] = 0
  for i = a + 1, a + n do
    local pending = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer)
    if #pending > 0 then
      redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
      redis.call('HSET', attempts, ARGV[i], at)
      held[#held + 1] = ARGV[i]
      count = count + 1
    end
  end
  held[place] = count
  if count > 0 then redis.call('PEXPIRE', attempts, ttl) end
  a = a + n + 1
end
return held
