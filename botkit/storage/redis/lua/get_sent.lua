-- GET_SENT: a sent-message record (or a receipt, "r:" .. ref) among the user's last K.
-- KEYS: the user's refs list
-- ARGV: messageId (or "r:" .. ref)
-- -> the record, or nil
local index = find_sent(KEYS[1], ARGV[1])
if not index then return nil end
return redis.call('LINDEX', KEYS[1], index)
