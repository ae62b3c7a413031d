-- CAMPAIGN_TOKENS: take sends from a campaign's budget, a token bucket every worker
-- shares. Time is the server's (TIME), so the workers' clocks do not matter.
-- KEYS: 1 meta hash
-- ARGV: 1 sends wanted
-- -> {granted, seconds until more (string; -1: not running), state}
local meta = KEYS[1]
local m = redis.call('HMGET', meta, 'state', 'start_at', 'rate', 'current', 'throttled_at',
                     'tokens', 'tokens_at')
local t = now()
local state = m[1]
if not state then return {0, '-1', 'missing'} end
if state == 'scheduled' then
  local start = tonumber(m[2]) or 0
  if t < start then return {0, tostring(start - t), state} end
  state = 'running'
  m[6], m[7] = '0', tostring(t)
  redis.call('HSET', meta, 'state', state, 'tokens', m[6], 'tokens_at', m[7])
end
if state ~= 'running' then return {0, '-1', state} end
local want = tonumber(ARGV[1])
local rate = tonumber(m[3]) or 0
if rate <= 0 then return {want, '0', state} end
local effective = effective_rate(rate, tonumber(m[4]), tonumber(m[5]), t)
-- At most a second's worth (and at most a batch) saved up; a grant waits for a
-- quarter second's worth, so a slow campaign sends a few small batches a second.
local cap = math.max(1, math.min(100, effective))
local last = tonumber(m[7]) or t
local tokens = math.min(cap, (tonumber(m[6]) or 0) + math.max(0, t - last) * effective)
local need = math.min(want, math.max(1, math.floor(effective * 0.25)), cap)
if tokens + 1e-9 < need then
  redis.call('HSET', meta, 'tokens', tostring(tokens), 'tokens_at', tostring(t))
  return {0, tostring((need - tokens) / effective), state}
end
local granted = math.min(want, math.floor(tokens + 1e-9))
redis.call('HSET', meta, 'tokens', tostring(tokens - granted), 'tokens_at', tostring(t))
return {granted, '0', state}
