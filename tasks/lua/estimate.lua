-- Fold one measurement (seconds) into a running estimate (an EWMA).
-- KEYS[1] the estimates hash; ARGV[1] field, ARGV[2] seconds, ARGV[3] weight of the new one
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '')
local x, w = tonumber(ARGV[2]), tonumber(ARGV[3])
local new = old and (old * (1 - w) + x * w) or x
redis.call('HSET', KEYS[1], ARGV[1], tostring(new))
return tostring(new)
