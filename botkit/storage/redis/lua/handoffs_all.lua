-- HANDOFFS_ALL: the oldest handoffs over every shard, in one call (not on Redis Cluster,
-- where the shards' keys live in different slots: there the store asks shard by shard).
-- KEYS: every shard's handoffs zset
-- ARGV: 1 how many at most, 2 how many to read from each shard first
-- -> {how many in all, user, since, user, since, ...}, the longest waiting first
-- The users are spread evenly, so the oldest ARGV[1] are a few per shard: a
-- shard is read further only when all its first few are older than the
-- ARGV[1]-th oldest seen in the first reads.
local limit, few = tonumber(ARGV[1]), tonumber(ARGV[2])
local total, seen, have, full = 0, {}, {}, {}
local function keep(found)
  for i = 1, #found, 2 do
    if not have[found[i]] then
      have[found[i]] = true
      seen[#seen + 1] = {tonumber(found[i + 1]), found[i], found[i + 1]}
    end
  end
end
for _, key in ipairs(KEYS) do
  total = total + redis.call('ZCARD', key)
  local found = redis.call('ZRANGE', key, 0, few - 1, 'WITHSCORES')
  keep(found)
  if #found == 2 * few then full[#full + 1] = {key, tonumber(found[#found]), found[#found]} end
end
local function older(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
table.sort(seen, older)
local cut = seen[limit] and seen[limit][1] or math.huge
local more = false
for _, shard in ipairs(full) do
  if shard[2] < cut then
    more = true
    local max = cut == math.huge and '+inf' or seen[limit][3]
    keep(redis.call('ZRANGEBYSCORE', shard[1], shard[3], max, 'WITHSCORES', 'LIMIT', 0,
      limit + few))
  end
end
if more then table.sort(seen, older) end
local out = {total}
for i = 1, math.min(limit, #seen) do
  out[#out + 1] = seen[i][2]
  out[#out + 1] = seen[i][3]
end
return out
