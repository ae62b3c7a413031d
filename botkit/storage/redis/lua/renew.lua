-- RENEW: extend a turn's lock and its in-progress mark.
-- KEYS: lock, [seen]
-- ARGV: token, lock_ttl_ms
-- -> 1 renewed | 0 lost
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if KEYS[2] and redis.call('GET', KEYS[2]) == 'in_progress' then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
