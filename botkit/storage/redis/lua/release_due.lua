-- RELEASE_DUE: move delayed messages that are due into the outbox stream.
-- KEYS: delayed zset, outbox stream
-- ARGV: now, limit
-- -> how many moved
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'm', message)
  redis.call('ZREM', KEYS[1], message)
end
return #due
