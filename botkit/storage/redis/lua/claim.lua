-- CLAIM: take over outbox entries idle for min_idle_ms.
-- KEYS: outbox stream
-- ARGV: group, consumer, min_idle_ms, count
-- -> {{id, message JSON, deliveries, send sequence number or ""}, ...}
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
