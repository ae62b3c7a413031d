-- CAMPAIGN_THROTTLE: the platform said too many (2301): halve the rate in force
-- (at least 1 a second), once per THROTTLE_EVERY seconds; it climbs back over RECOVER.
-- KEYS: 1 meta hash
-- -> the rate now in force (string)
local m = redis.call('HMGET', KEYS[1], 'rate', 'current', 'throttled_at')
local rate = tonumber(m[1]) or 0
if rate <= 0 then return '0' end
local t = now()
local throttled = tonumber(m[3])
local effective = effective_rate(rate, tonumber(m[2]), throttled, t)
if throttled and t - throttled < THROTTLE_EVERY then return tostring(effective) end
local halved = math.max(math.min(1, rate), effective / 2)
redis.call('HSET', KEYS[1], 'current', tostring(halved), 'throttled_at', tostring(t))
return tostring(halved)
