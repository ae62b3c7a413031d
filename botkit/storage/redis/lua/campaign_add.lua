-- CAMPAIGN_ADD: append recipients to a campaign's audience, each phone once.
-- KEYS: 1 audience stream, 2 totals hash, then the results bucket of each recipient
-- ARGV: 1 n, then n (phone, each parameter after a \31) pairs
-- -> {added, duplicates}
local n = tonumber(ARGV[1])
local added, duplicates = 0, 0
for i = 1, n do
  local phone, params = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('HSETNX', KEYS[2 + i], phone, 'q') == 1 then
    redis.call('XADD', KEYS[1], '*', 'p', phone, 'a', params)
    added = added + 1
  else
    duplicates = duplicates + 1
  end
end
if added > 0 then redis.call('HINCRBY', KEYS[2], 'audience', added) end
if duplicates > 0 then redis.call('HINCRBY', KEYS[2], 'k:duplicate', duplicates) end
return {added, duplicates}
