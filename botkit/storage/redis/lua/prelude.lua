-- Prepended to every script of the store, after the generated line
--   local FIELDS = {'state', 'data', ...}
-- (the conversation fields, in botkit/storage/redis/fields.py's order).

-- Append the (not_before or "", message JSON) pairs ARGV[first..last] to the
-- outbox. Messages for now go to the stream, numbered in the user's send
-- sequence (the order hash, which lives ``ttl`` ms); later ones wait in the
-- delayed set, unnumbered.
local function append(stream, delayed, order, ttl, first, last)
  local count = 0
  for j = first, last, 2 do
    if ARGV[j] == '' then count = count + 1 end
  end
  local seq = 0
  if count > 0 then
    seq = redis.call('HINCRBY', order, 'next', count) - count
    redis.call('PEXPIRE', order, ttl)
  end
  for j = first, last, 2 do
    if ARGV[j] == '' then
      seq = seq + 1
      redis.call('XADD', stream, '*', 'm', ARGV[j + 1], 's', seq)
    else
      redis.call('ZADD', delayed, ARGV[j], ARGV[j + 1])
    end
  end
end
