-- CAMPAIGN_STATE: move a campaign to a state if it is in one of the allowed ones.
-- KEYS: 1 meta hash, 2 totals hash
-- ARGV: 1 the new state, then the allowed current states
-- -> {"ok", state now} | {"refused", current state} | {"missing"}
local meta = KEYS[1]
local state = redis.call('HGET', meta, 'state')
if not state then return {'missing'} end
local allowed = false
for i = 2, #ARGV do
  if ARGV[i] == state then allowed = true end
end
if not allowed then return {'refused', state} end
local to = ARGV[1]
local t = now()
if to == 'running' then
  local start = tonumber(redis.call('HGET', meta, 'start_at'))
  if start and start > t then to = 'scheduled' end
  redis.call('HSET', meta, 'tokens', '0', 'tokens_at', tostring(t))
end
redis.call('HSET', meta, 'state', to)
if to == 'cancelled' then redis.call('HSET', meta, 'finished_at', tostring(t)) end
check_done(meta, KEYS[2], t)
return {'ok', redis.call('HGET', meta, 'state')}
