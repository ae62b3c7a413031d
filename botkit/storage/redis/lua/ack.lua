-- ACK: acknowledge and delete entries of one or more shards, record the sent
-- messages in their users' keys, move the users' send orders.
-- One call covers one shard on Redis Cluster (its keys share a slot), every
-- shard a batch touches elsewhere.
-- KEYS: per shard part, in order: its outbox stream, its attempts hash, then per
--       user u (0-based) of the part: conversation hash (its send order), refs list
-- ARGV: 1 group, 2 sent_ttl_ms, 3 records kept per user, then per part: its
--       count of users, n, n entry ids to acknowledge and delete, m, m (user,
--       send sequence number) pairs the provider answered, r, r (user,
--       messageId, record JSON) triples
-- -> 1 | 0 when a shard's group was gone (the records were still written)
local group, ttl, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local result, k, i = 1, 1, 4
while i <= #ARGV do
  local stream, attempts, users = KEYS[k], KEYS[k + 1], tonumber(ARGV[i])
  local n = tonumber(ARGV[i + 1])
  local first = i + 2
  i = first + n
  local m = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, m do
    -- A send order that expired stays gone: its user's next messages go as they come.
    local conv = KEYS[k + 2 + 2 * tonumber(ARGV[i])]
    local done = redis.call('HMGET', conv, 'next_seq', 'done_seq')
    if done[1] and tonumber(ARGV[i + 1]) > (tonumber(done[2]) or 0) then
      redis.call('HSET', conv, 'done_seq', ARGV[i + 1])
    end
    i = i + 2
  end
  local r = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, r do
    -- A messageId the provider just gave: a new record (a repeated ack adds a
    -- second copy, which the newer one hides until it is trimmed).
    remember_new(KEYS[k + 3 + 2 * tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2], ttl, keep)
    i = i + 3
  end
  if n > 0 then
    local last = first + n - 1
    if not pcall(redis.call, 'XACK', stream, group, unpack(ARGV, first, last)) then
      result = 0
    end
    redis.call('XDEL', stream, unpack(ARGV, first, last))
    redis.call('HDEL', attempts, unpack(ARGV, first, last))
  end
  k = k + 2 + 2 * users
end
return result
