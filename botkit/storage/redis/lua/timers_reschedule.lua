-- TIMERS_RESCHEDULE: after a claim that found nothing due, put the user at their next timer.
-- KEYS: the shard's timers zset
-- ARGV: 1 user, 2 the claim's end, 3 the next due time, or "" for none
-- Nothing happens when the user's score is no longer the claim's (a commit moved it).
-- -> 1 moved | 0 left as it was
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
return 1
