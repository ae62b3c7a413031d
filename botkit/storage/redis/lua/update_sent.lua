-- UPDATE_SENT: replace a sent-message record, keeping its TTL.
-- KEYS: sent record
-- ARGV: record JSON, sent_ttl_ms (used only when the record had expired)
if redis.call('SET', KEYS[1], ARGV[1], 'XX', 'KEEPTTL') then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 0
