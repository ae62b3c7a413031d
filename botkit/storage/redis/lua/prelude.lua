-- Prepended to every script of the store, after the generated lines
--   local FIELDS = {'state', 'data', ...}   local FIELD_INDEX = {state = 1, ...}
-- (the conversation fields, in botkit/storage/redis/fields.py's order).

-- Append the (not_before or "", message JSON) pairs ARGV[first..last] to the
-- shard's outbox. Messages for now go to the stream, numbered in the user's
-- send sequence (the order hash, which lives ``ttl`` ms); later ones wait in
-- the delayed set, unnumbered.
local function append(stream, delayed, order, ttl, first, last)
  local count = 0
  for j = first, last, 2 do
    if ARGV[j] == '' then count = count + 1 end
  end
  local seq = 0
  if count > 0 then
    seq = redis.call('HINCRBY', order, 'next', count) - count
    redis.call('PEXPIRE', order, ttl)
  end
  for j = first, last, 2 do
    if ARGV[j] == '' then
      seq = seq + 1
      redis.call('XADD', stream, '*', 'm', ARGV[j + 1], 's', seq)
    else
      redis.call('ZADD', delayed, ARGV[j], ARGV[j + 1])
    end
  end
end

-- True when the turn lock (value "<token> <dedupe key>") is the token's.
local function holds(lock, token)
  local held = redis.call('GET', lock)
  return held and string.sub(held, 1, #token + 1) == token .. ' '
end

-- Keep a sent-message record in the user's last ``keep`` (sliding TTL ``ttl`` ms).
local function remember(refs, ids, id, record, ttl, keep)
  if redis.call('HSET', refs, id, record) == 1 then
    redis.call('LPUSH', ids, id)
    local older = redis.call('LRANGE', ids, keep, -1)
    if #older > 0 then
      redis.call('LTRIM', ids, 0, keep - 1)
      redis.call('HDEL', refs, unpack(older))
    end
  end
  redis.call('PEXPIRE', refs, ttl)
  redis.call('PEXPIRE', ids, ttl)
end
