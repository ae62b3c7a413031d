-- Prepended to every script of the store.

-- Append the (not_before or "", message JSON) pairs ARGV[first..last] to the
-- shard's outbox. Messages for now go to the stream, numbered in the user's
-- send sequence (field next_seq of the conversation hash, which lives at
-- least ``ttl`` ms from now; a caller that just set that TTL passes nil);
-- later ones wait in the delayed set, unnumbered.
local function append(stream, delayed, conv, ttl, first, last)
  local count = 0
  for j = first, last, 2 do
    if ARGV[j] == '' then count = count + 1 end
  end
  local seq = 0
  if count > 0 then
    seq = redis.call('HINCRBY', conv, 'next_seq', count) - count
    if ttl and redis.call('PTTL', conv) < tonumber(ttl) then redis.call('PEXPIRE', conv, ttl) end
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

-- True when the turn lock (value "<token> <dedupe key>") is the token's.
local function holds(lock, token)
  local held = redis.call('GET', lock)
  return held and string.sub(held, 1, #token + 1) == token .. ' '
end

-- The user's sent-message records: a list of messageId, record, messageId,
-- record..., newest first, at most ``keep`` records long (a list stays
-- compact whatever a record's size; LPOS finds an id without copying).
-- -> the record's index in the list, or nil
local function find_sent(refs, id)
  local at = redis.call('LPOS', refs, id, 'MAXLEN', 0)
  if at and at % 2 == 0 then return at + 1 end
  return nil
end

-- Add a sent-message record the user's list does not hold yet, as the newest
-- of their last ``keep`` (sliding TTL ``ttl`` ms).
local function remember_new(refs, id, record, ttl, keep)
  redis.call('LPUSH', refs, record, id)
  redis.call('LTRIM', refs, 0, 2 * keep - 1)
  redis.call('PEXPIRE', refs, ttl)
end

-- Keep a sent-message record among the user's last ``keep`` (sliding TTL
-- ``ttl`` ms); an update stays in its place.
local function remember(refs, id, record, ttl, keep)
  local index = find_sent(refs, id)
  if index then
    redis.call('LSET', refs, index, record)
    redis.call('PEXPIRE', refs, ttl)
  else
    remember_new(refs, id, record, ttl, keep)
  end
end

-- Append the transcript entries ARGV[first..last] to the user's transcript
-- stream, capped at ``length`` entries, kept ``ttl`` ms after the last one.
local function record(transcript, length, ttl, first, last)
  if last < first then return end
  for j = first, last do
    redis.call('XADD', transcript, 'MAXLEN', length, '*', 'e', ARGV[j])
  end
  redis.call('PEXPIRE', transcript, ttl)
end
