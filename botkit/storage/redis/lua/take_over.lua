-- TAKE_OVER: take a shard's entries that senders no longer live read and did not
-- acknowledge (a sender that left): its new owner sends them now, not after a claim.
-- KEYS: the shard's outbox stream
-- ARGV: group, consumer, min_idle_ms, count, then the live senders' names
-- -> {{id, message JSON, deliveries, send sequence number or ""}, ...}
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local live = {}
for i = 5, #ARGV do live[ARGV[i]] = true end
local ids = {}
for _, p in ipairs(redis.call('XPENDING', stream, group, 'IDLE', ARGV[3], '-', '+', ARGV[4])) do
  if not live[p[2]] then ids[#ids + 1] = p[1] end
end
local taken = {}
if #ids == 0 then return taken end
-- The idle time again: an entry another taker just took is not idle any more.
for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, ARGV[3], unpack(ids))) do
  local fields = entry[2]
  if fields then
    local message, seq
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then message = fields[i + 1] end
      if fields[i] == 's' then seq = fields[i + 1] end
    end
    local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
    taken[#taken + 1] = {entry[1], message or '', pending[1][4], seq or ''}
  else
    redis.call('XACK', stream, group, entry[1])
  end
end
return taken
