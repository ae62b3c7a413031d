-- READY: which outbox items may go now (of one shard on Redis Cluster, any elsewhere).
-- KEYS: the conversation hashes of the items' users (their send order)
-- ARGV: (user's key index in KEYS, send sequence number or "") pairs, in outbox order
-- -> one 1 (send it now) or 0 (an earlier message to the same user is not
--    answered yet) per pair. Messages to one user are numbered at commit
--    (commit.lua); the sender that reads number k sends it only once the
--    provider answered k - 1, whichever process sent that. A user whose send
--    order is gone (expired) and messages without a number (retries) go at once.
local verdicts, expect, blocked = {}, {}, {}
for j = 1, #ARGV, 2 do
  local key, seq, verdict = KEYS[tonumber(ARGV[j])], tonumber(ARGV[j + 1]), 1
  if seq then
    if blocked[key] then
      verdict = 0
    else
      local want = expect[key]
      if want == nil then
        local state = redis.call('HMGET', key, 'next_seq', 'done_seq')
        if state[1] then want = (tonumber(state[2]) or 0) + 1 end
      end
      if want ~= nil and seq > want then
        verdict = 0
        blocked[key] = true
      else
        expect[key] = seq + 1
      end
    end
  end
  verdicts[#verdicts + 1] = verdict
end
return verdicts
