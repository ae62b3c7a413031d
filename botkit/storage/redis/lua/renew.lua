-- RENEW: extend a turn's lock (the message stays "in progress" with it).
-- KEYS: lock
-- ARGV: token, lock_ttl_ms
-- -> 1 renewed | 0 lost
if not holds(KEYS[1], ARGV[1]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
