-- PRUNE_CONSUMERS: forget the consumers of a stream's group that hold nothing and
-- have been idle for ARGV[2] ms (processes gone long ago: every process reads as a
-- consumer of its own, so without this each restart would leave one behind for
-- good). Atomic, so none holding an entry goes; one that reads again is made anew.
-- KEYS: the stream (the agent notices, or one outbox shard)
-- ARGV: group, idle ms
-- -> how many consumers were forgotten (0 when the stream or group is gone)
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
