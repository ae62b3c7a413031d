-- READ: new outbox entries for a consumer, flat, without blocking.
-- KEYS: outbox stream
-- ARGV: group, consumer, count
-- -> flat array: entry id, message JSON, send sequence number or "", entry id, ...
local found = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3],
                         'STREAMS', KEYS[1], '>')
local out = {}
if found then
  for _, entry in ipairs(found[1][2]) do
    local fields, message, seq = entry[2], nil, ''
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then message = fields[i + 1] end
      if fields[i] == 's' then seq = fields[i + 1] end
    end
    if message then
      out[#out + 1] = entry[1]
      out[#out + 1] = message
      out[#out + 1] = seq
    end
  end
end
return out
