-- GET_SENT: a sent-message record among the user's last K.
-- KEYS: the user's refs list
-- ARGV: messageId
-- -> the record, or nil
local _, entry = find_sent(KEYS[1], ARGV[1])
if not entry then return nil end
return string.sub(entry, #ARGV[1] + 2)
