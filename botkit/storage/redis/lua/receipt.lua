-- RECEIPT: remember that a status callback named a reply its sender has not
-- acknowledged yet: the provider took it. Kept among the user's sent records
-- (bounded like them) under "r:" .. ref, as JSON [first messageId, [status, ...]].
-- KEYS: the user's refs list
-- ARGV: "r:" .. ref, messageId, status, sent_ttl_ms, records kept per user
-- -> 1
local index = find_sent(KEYS[1], ARGV[1])
local receipt = {ARGV[2], {}}
if index then receipt = cjson.decode(redis.call('LINDEX', KEYS[1], index)) end
local known = false
for _, status in ipairs(receipt[2]) do
  if status == ARGV[3] then known = true end
end
if not known then table.insert(receipt[2], ARGV[3]) end
remember(KEYS[1], ARGV[1], cjson.encode(receipt), ARGV[4], tonumber(ARGV[5]))
return 1
