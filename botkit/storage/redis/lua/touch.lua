-- TOUCH: restart the idle time of the stream entries a consumer still holds, so a
-- live sender retrying a batch is not taken over; entries another consumer
-- claimed meanwhile are left to it.
-- KEYS: the stream (a campaign's audience)
-- ARGV: group, consumer, id...
-- -> {id, ...} the ids still held by consumer
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local held = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', stream, group, ARGV[i], ARGV[i], 1, consumer)
  if #pending > 0 then
    redis.call('XCLAIM', stream, group, consumer, 0, ARGV[i], 'JUSTID')
    held[#held + 1] = ARGV[i]
  end
end
return held
