-- NOTICES_PRUNE: forget the consumers of the group that hold nothing and have been
-- idle for ARGV[2] ms (workers gone long ago); atomic, so none holding an entry goes.
-- KEYS: the notices stream
-- ARGV: group, idle ms
-- -> how many consumers were forgotten
local stream, group, idle = KEYS[1], ARGV[1], tonumber(ARGV[2])
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', stream, group)
if not ok then return 0 end
local gone = 0
for _, info in ipairs(consumers) do
  local fields = {}
  for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
  if tonumber(fields['pending']) == 0 and tonumber(fields['idle']) >= idle then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, fields['name'])
    gone = gone + 1
  end
end
return gone
