-- COMMIT: check the lock, save, mark the message done, queue the replies, unlock.
-- KEYS: conv, lock, waiting, outbox stream, delayed zset, order hash, [seen]
-- ARGV: 1 token, 2 conversation_ttl_ms, 3 done_ttl_ms, 4 unlock channel,
--       5 wake-up payload, 6 nset, 7 ndel, 8 nout, then nset field/value pairs
--       to set in the conversation, ndel fields to delete from it, and nout
--       (not_before or "" for now, message JSON) pairs for the outbox.
-- The caller computes the conversation's changes against what BEGIN read: the
-- lock (checked first) means nobody else wrote it since. Each message for now
-- gets the user's next send sequence number (stream field "s"; see ready.lua).
-- -> 1 committed | 0 the lock is not ours (nothing written)
local conv, lock, waiting, stream, delayed, order, seen =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
if redis.call('GET', lock) ~= ARGV[1] then return 0 end
local nset, ndel, nout = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local i = 9
if nset > 0 then redis.call('HSET', conv, unpack(ARGV, i, i + 2 * nset - 1)) end
i = i + 2 * nset
if ndel > 0 then redis.call('HDEL', conv, unpack(ARGV, i, i + ndel - 1)) end
i = i + ndel
redis.call('PEXPIRE', conv, ARGV[2])
if seen then redis.call('SET', seen, 'done', 'PX', ARGV[3]) end
append(stream, delayed, order, ARGV[2], i, i + 2 * nout - 1)
-- The lock is there (checked above): 2 deleted means a turn was waiting.
if redis.call('DEL', lock, waiting) == 2 then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
