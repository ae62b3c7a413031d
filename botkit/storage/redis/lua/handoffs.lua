-- HANDOFFS: one shard's handed-off users handed off by ARGV[2], the longest waiting first.
-- KEYS: the shard's handoffs zset
-- ARGV: 1 how many at most, 2 the latest "since" wanted ("+inf" for any)
-- -> {how many in all, user, since, user, since, ...} (strings: no float parsing client-side)
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[1]))
table.insert(found, 1, redis.call('ZCARD', KEYS[1]))
return found
