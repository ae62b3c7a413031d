-- COMMIT: check the lock, save, remember the message as handled, queue the replies, unlock.
-- KEYS: conv (with the user's send order), lock, waiting, seen, the shard's outbox stream,
--       its delayed zset, the shard's timers zset, the user's transcript stream, the
--       shard's handoffs zset
-- ARGV: 1 token, 2 conversation_ttl_ms, 3 done_ttl_ms, 4 the shard's unlock channel (SPUBLISH),
--       5 wake-up payload, 6 dedupe key or "", 7 dedupe keys kept per user,
--       8 nset, 9 ndel, 10 nout, 11 the user's next timer ("" unchanged,
--       "-" none, else its due time), 12 the user, 13 ntr, 14 transcript length,
--       15 transcript_ttl_ms, 16 the user's handoff ("" unchanged, "-" none, else since),
--       then nset field/value pairs to set in the conversation, ndel fields to delete
--       from it, nout (not_before or "" for now, message JSON) pairs for the outbox,
--       and ntr transcript entries (JSON).
-- The caller computes the conversation's changes against what BEGIN read: the
-- lock (checked first) means nobody else wrote it since. Each message for now
-- gets the user's next send sequence number (stream field "s"; see ready.lua).
-- -> 1 committed | 0 the lock is not ours (nothing written)
local conv, lock, waiting, seen, stream, delayed, timers, transcript, handoffs =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
if not holds(lock, ARGV[1]) then return 0 end
local nset, ndel, nout = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local i = 17
if nset > 0 then redis.call('HSET', conv, unpack(ARGV, i, i + 2 * nset - 1)) end
i = i + 2 * nset
if ndel > 0 then redis.call('HDEL', conv, unpack(ARGV, i, i + ndel - 1)) end
i = i + ndel
redis.call('PEXPIRE', conv, ARGV[2])
if ARGV[11] == '-' then
  redis.call('ZREM', timers, ARGV[12])
elseif ARGV[11] ~= '' then
  redis.call('ZADD', timers, ARGV[11], ARGV[12])
end
if ARGV[6] ~= '' then
  redis.call('LPUSH', seen, ARGV[6])
  redis.call('LTRIM', seen, 0, tonumber(ARGV[7]) - 1)
  redis.call('PEXPIRE', seen, ARGV[3])
end
if ARGV[16] == '-' then
  redis.call('ZREM', handoffs, ARGV[12])
elseif ARGV[16] ~= '' then
  redis.call('ZADD', handoffs, ARGV[16], ARGV[12])
end
append(stream, delayed, conv, nil, i, i + 2 * nout - 1)  -- its TTL was just set
i = i + 2 * nout
record(transcript, ARGV[14], ARGV[15], i, i + tonumber(ARGV[13]) - 1)
-- The lock is there (checked above): 2 deleted means a turn was waiting.
if redis.call('DEL', lock, waiting) == 2 then redis.call('SPUBLISH', ARGV[4], ARGV[5]) end
return 1
