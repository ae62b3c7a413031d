-- CAMPAIGN_STATUS: move a recipient's status forward (a status callback).
-- KEYS: 1 the recipient's results bucket, 2 totals hash
-- ARGV: 1 phone, 2 status, 3 error code or "", 4 messageId
-- -> 1 moved | 0 not (unknown recipient, or a status that cannot follow)
local before = redis.call('HGET', KEYS[1], ARGV[1])
if not before then return 0 end
local kind, known, cur, code = split(before)
if (kind ~= 'q' and kind ~= 's') or not moves(cur, code, ARGV[2]) then return 0 end
if kind == 's' then
  count_flags(KEYS[2], cur, code, -1)
  count_flags(KEYS[2], ARGV[2], ARGV[3], 1)
end
if known == '' then known = ARGV[4] end
redis.call('HSET', KEYS[1], ARGV[1], kind .. '|' .. known .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return 1
