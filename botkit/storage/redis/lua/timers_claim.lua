-- TIMERS_CLAIM: claim the users whose earliest timer is due, shard after shard.
-- One call covers one shard on Redis Cluster (its keys share a slot), every
-- shard elsewhere: a poll that finds nothing due is one call, not one per shard.
-- KEYS: the shards' timers zsets
-- ARGV: 1 now, 2 the claim's end (their new score), 3 how many at most
-- A claimed user is not due again before the claim's end; the commit of their
-- timer turn moves them to their next timer (or out of the set).
-- -> the users claimed
local claimed, most = {}, tonumber(ARGV[3])
for k = 1, #KEYS do
  if #claimed >= most then break end
  local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'LIMIT', 0, most - #claimed)
  for _, user in ipairs(due) do
    redis.call('ZADD', KEYS[k], ARGV[2], user)
    claimed[#claimed + 1] = user
  end
end
return claimed
