-- Helpers of the campaign scripts (after the store's prelude). A recipient's
-- result is "<kind>|<messageId>|<status>|<error code>" in its results bucket:
-- kind q (queued), s (sent), k:<reason> (skipped), f:<reason> (failed).

local RANK = {accepted = 0, enqueued = 0, sent = 1, delivered = 2, read = 3, visited = 3}
local FAILURES = {failed = true, undelivered = true, cancelled = true, expired = true,
                  vp_expired = true, rejected = true}
local RETRIED = '2301'
-- After a 2301 halved the rate, the full rate returns over this many seconds.
local RECOVER = 120
-- Two 2301s closer than this many seconds halve the rate once.
local THROTTLE_EVERY = 2

local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function split(value)
  local parts = {}
  for part in string.gmatch(value .. '|', '([^|]*)|') do parts[#parts + 1] = part end
  return parts[1] or '', parts[2] or '', parts[3] or '', parts[4] or ''
end

-- delivered?, read?, failed code (or nil) of a recipient at status
local function flags(status, code)
  if FAILURES[status] then
    if code == '' then return false, false, status end
    return false, false, code
  end
  local rank = RANK[status] or -1
  return rank >= 2, rank >= 3, nil
end

-- May a recipient at status cur (error curcode) move to new? Forward only.
local function moves(cur, curcode, new)
  if new == cur then return false end
  if FAILURES[cur] then return curcode == RETRIED and not FAILURES[new] end
  if FAILURES[new] then return (RANK[cur] or 0) < 2 end
  return (RANK[new] or -1) > (RANK[cur] or -1)
end

local function count_flags(totals, status, code, sign)
  local delivered, read, failed = flags(status, code)
  if delivered then redis.call('HINCRBY', totals, 'delivered', sign) end
  if read then redis.call('HINCRBY', totals, 'read', sign) end
  if failed then redis.call('HINCRBY', totals, 'f:' .. failed, sign) end
end

-- The rate in force: the campaign's, or climbing back to it after a throttle.
local function effective_rate(rate, current, throttled_at, t)
  if not throttled_at then return rate end
  return math.min(rate, (current or rate) + math.max(0, t - throttled_at) * rate / RECOVER)
end

-- A running campaign whose every recipient is settled is done.
local function check_done(meta, totals, t)
  if redis.call('HGET', meta, 'state') ~= 'running' then return end
  local counts = redis.call('HMGET', totals, 'audience', 'done')
  if (tonumber(counts[2]) or 0) >= (tonumber(counts[1]) or 0) then
    redis.call('HSET', meta, 'state', 'done', 'finished_at', tostring(t))
  end
end
