-- CAMPAIGN_SETTLE: record recipients' results, move the totals, acknowledge their
-- audience entries; a recipient settled already is not counted again.
-- KEYS: 1 audience stream, 2 totals hash, 3 meta hash, then each result's bucket
-- ARGV: 1 group, 2 n, then n x (entry id or "", phone, outcome s|f|k, reason,
--       messageId, status)
-- -> 1
local totals = KEYS[2]
local n = tonumber(ARGV[2])
local entries = {}
for i = 1, n do
  local b = 3 + (i - 1) * 6
  local entry, phone, outcome, reason = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local message_id, status = ARGV[b + 4], ARGV[b + 5]
  if entry ~= '' then entries[#entries + 1] = entry end
  local bucket = KEYS[3 + i]
  local before = redis.call('HGET', bucket, phone)
  if before then
    local kind, _, cur, code = split(before)
    if kind == 'q' then
      redis.call('HINCRBY', totals, 'done', 1)
      if outcome == 'k' then
        redis.call('HSET', bucket, phone, 'k:' .. reason .. '|||')
        redis.call('HINCRBY', totals, 'k:' .. reason, 1)
      elseif outcome == 'f' then
        redis.call('HSET', bucket, phone, 'f:' .. reason .. '||rejected|' .. status)
        redis.call('HINCRBY', totals, 'f:' .. reason, 1)
      else
        local new = status
        if new == '' then new = 'accepted' end
        -- A status callback may have come first: keep whichever is further.
        if cur == '' or moves(cur, code, new) then cur, code = new, '' end
        redis.call('HSET', bucket, phone, 's|' .. message_id .. '|' .. cur .. '|' .. code)
        redis.call('HINCRBY', totals, 'sent', 1)
        count_flags(totals, cur, code, 1)
      end
    end
  end
end
if #entries > 0 then
  pcall(redis.call, 'XACK', KEYS[1], ARGV[1], unpack(entries))
  redis.call('XDEL', KEYS[1], unpack(entries))
end
check_done(KEYS[3], totals, now())
return 1
