-- UPDATE_SENT: replace (or add) a sent-message record among the user's last K.
-- KEYS: the user's refs list
-- ARGV: messageId, record JSON, sent_ttl_ms, records kept per user
remember(KEYS[1], ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]))
return 1
