-- CLAIM: take over one shard's outbox entries that other consumers read and did
-- not acknowledge, idle for min_idle_ms at least.
-- KEYS: 1 the shard's outbox stream, 2 its attempts hash (attempt.lua)
-- ARGV: 1 group, 2 consumer, 3 min_idle_ms, 4 count, then the live senders' names.
--       Without names: the entries of every other consumer (a claim). With names:
--       only those of consumers not among them (a take-over of senders that left).
-- -> {{id, message JSON, deliveries, send sequence number or "", ms since a
--      sender last started to post it (it may be at the provider) or -1 when
--      none did}, ...}
local stream, attempts, group, consumer = KEYS[1], KEYS[2], ARGV[1], ARGV[2]
local min_idle, want = ARGV[3], tonumber(ARGV[4])
local live = {[consumer] = true}
local only_departed = #ARGV > 4
for i = 5, #ARGV do live[ARGV[i]] = true end
local now = redis.call('TIME')
now = now[1] * 1000 + math.floor(now[2] / 1000)
-- A stream deleted under the group (keys removed by hand): as Redis says of a lost group.
if redis.call('EXISTS', stream) == 0 then
  return redis.error_reply('NOGROUP the outbox stream ' .. stream .. ' is gone')
end
local ids, seen = {}, {}
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local name, pending
  for i = 1, #info, 2 do
    if info[i] == 'name' then name = info[i + 1] end
    if info[i] == 'pending' then pending = info[i + 1] end
  end
  if pending > 0 and name ~= consumer and not (only_departed and live[name]) then
    for _, p in ipairs(redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+',
                                  want - #ids, name)) do
      ids[#ids + 1] = p[1]
      seen[p[1]] = p
    end
  end
  if #ids >= want then break end
end
local claimed = {}
if #ids == 0 then return claimed end
-- The idle time again: an entry another claimer just took is not idle any more.
for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, min_idle, unpack(ids))) do
  local fields = entry[2]
  if fields then
    local message, seq
    for i = 1, #fields, 2 do
      if fields[i] == 'm' then message = fields[i + 1] end
      if fields[i] == 's' then seq = fields[i + 1] end
    end
    local at = tonumber(redis.call('HGET', attempts, entry[1]))
    local ago = -1
    if at then ago = math.max(0, now - at) end
    claimed[#claimed + 1] = {entry[1], message or '', seen[entry[1]][4] + 1, seq or '', ago}
  else
    -- Deleted from the stream (older servers still return it): nothing to send.
    redis.call('XACK', stream, group, entry[1])
    redis.call('HDEL', attempts, entry[1])
  end
end
return claimed
