-- TIMERS_CLAIM: claim the users of a shard whose earliest timer is due.
-- KEYS: the shard's timers zset
-- ARGV: 1 now, 2 the claim's end (their new score), 3 how many at most
-- A claimed user is not due again before the claim's end; the commit of their
-- timer turn moves them to their next timer (or out of the set).
-- -> the users claimed
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, user in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], user) end
return due
