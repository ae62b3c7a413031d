-- CAMPAIGN_CLAIM: take over audience entries taken and not settled: idle for
-- min_idle_ms (any consumer), or, given live senders, of consumers not among them.
-- KEYS: 1 audience stream
-- ARGV: 1 group, 2 consumer, 3 min_idle_ms, 4 count, then the live senders (none: any)
-- -> {{id, phone, params, deliveries}, ...}
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local want = tonumber(ARGV[4])
local ids = {}
if #ARGV > 4 then
  local live = {}
  for i = 5, #ARGV do live[ARGV[i]] = true end
  for _, p in ipairs(redis.call('XPENDING', stream, group, 'IDLE', ARGV[3], '-', '+', want)) do
    if not live[p[2]] then ids[#ids + 1] = p[1] end
  end
else
  for _, p in ipairs(redis.call('XPENDING', stream, group, 'IDLE', ARGV[3], '-', '+', want)) do
    ids[#ids + 1] = p[1]
  end
end
local taken = {}
if #ids == 0 then return taken end
for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, ARGV[3], unpack(ids))) do
  local fields = entry[2]
  if fields then
    local phone, params = '', ''
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then phone = fields[i + 1] end
      if fields[i] == 'a' then params = fields[i + 1] end
    end
    local pending = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
    taken[#taken + 1] = {entry[1], phone, params, pending[1][4]}
  else
    redis.call('XACK', stream, group, entry[1])
  end
end
return taken
