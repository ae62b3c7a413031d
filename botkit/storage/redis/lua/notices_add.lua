-- NOTICES_ADD: append agent notices to the shared stream and trim it without
-- dropping what the webhook's consumer group has not posted yet, up to a hard cap.
-- KEYS: the notices stream
-- ARGV: keep (entries kept for the pages), most (hard cap), ttl ms, group, payload...
-- -> how many notices the group had not posted yet the hard cap dropped
local stream = KEYS[1]
local keep, most, ttl, group = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
-- The group reads from before these: a new stream (or one that expired) loses none.
if group ~= '-' then redis.pcall('XGROUP', 'CREATE', stream, group, '$', 'MKSTREAM') end
for i = 5, #ARGV do redis.call('XADD', stream, '*', 'n', ARGV[i]) end
redis.call('PEXPIRE', stream, ttl)
local length = redis.call('XLEN', stream)
if length <= keep then return 0 end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function before(a, b) -- id a < id b
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end

-- The oldest entry the group still needs: its oldest pending one, else the first it
-- has not read. No group (no webhook): the pages only need the last ``keep``.
local needed = nil
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
if ok then
  for _, info in ipairs(groups) do
    local fields = {}
    for j = 1, #info, 2 do fields[info[j]] = info[j + 1] end
    if fields['name'] == group then
      local pending = redis.call('XPENDING', stream, group)
      if tonumber(pending[1]) > 0 then
        needed = pending[2]
      else
        local next = redis.call('XRANGE', stream, '(' .. fields['last-delivered-id'], '+', 'COUNT', 1)
        needed = next[1] and next[1][1] or nil
        if not needed then needed = 'all posted' end
      end
    end
  end
end
if needed == nil or needed == 'all posted' then
  redis.call('XTRIM', stream, 'MAXLEN', '~', keep)
  return 0
end
-- Posted entries go; the un-posted stay while the stream holds at most ``most``.
local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
if oldest[1] and before(oldest[1][1], needed) then
  local kept = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', keep)
  local floor = kept[#kept][1]
  if before(needed, floor) then floor = needed end
  redis.call('XTRIM', stream, 'MINID', '~', floor)
  length = redis.call('XLEN', stream)
end
if length <= most then return 0 end
local dropped = 0
for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', length - most)) do
  if not before(entry[1], needed) then dropped = dropped + 1 end
end
redis.call('XTRIM', stream, 'MAXLEN', most)
return dropped
