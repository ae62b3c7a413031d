-- ATTEMPT: just before a sender posts entries to the provider: of the given ids,
-- those the consumer still holds (another consumer may have claimed some),
-- each with its idle time restarted (nobody claims it while the send lasts) and
-- marked with the time of the attempt (server time, ms): whoever takes it over
-- later knows it may be at the provider, and since when. ack.lua clears the mark.
-- KEYS: 1 the shard's outbox stream, 2 its attempts hash
-- ARGV: 1 group, 2 consumer, 3 the attempts hash's TTL in ms, then the ids
-- -> {id, ...} the ids still held by the consumer, now marked
local stream, attempts, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local now = redis.call('TIME')
local at = now[1] * 1000 + math.floor(now[2] / 1000)
local held = {}
for i = 4, #ARGV do
  local pending = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer)
  if #pending > 0 then
    redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
    redis.call('HSET', attempts, ARGV[i], string.format('%d', at))
    held[#held + 1] = ARGV[i]
  end
end
if #held > 0 then redis.call('PEXPIRE', attempts, ARGV[3]) end
return held
