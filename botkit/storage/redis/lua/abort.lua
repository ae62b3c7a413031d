-- ABORT: unlock and forget the in-progress mark, if the lock is still ours.
-- KEYS: lock, waiting, [seen]
-- ARGV: token, unlock channel, wake-up payload
-- -> 1 released | 0 the lock was not ours (nothing changed)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if KEYS[3] and redis.call('GET', KEYS[3]) == 'in_progress' then
  redis.call('DEL', KEYS[3])
end
if redis.call('DEL', KEYS[1], KEYS[2]) == 2 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
