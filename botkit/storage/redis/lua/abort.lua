-- ABORT: unlock (the message is no longer in progress), if the lock is still ours.
-- KEYS: lock, waiting
-- ARGV: token, the shard's unlock channel (SPUBLISH), wake-up payload
-- -> 1 released | 0 the lock was not ours (nothing changed)
if not holds(KEYS[1], ARGV[1]) then return 0 end
if redis.call('DEL', KEYS[1], KEYS[2]) == 2 then redis.call('SPUBLISH', ARGV[2], ARGV[3]) end
return 1
