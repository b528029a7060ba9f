-- Fold one measurement (seconds) into a running estimate (an EWMA).
-- KEYS[1] the estimates hash; ARGV[1] field, ARGV[2] seconds, ARGV[3] weight of the new one
local estimates, name = KEYS[1], ARGV[1]
local x, weight = tonumber(ARGV[2]), tonumber(ARGV[3])
local old = tonumber(redis.call('HGET', estimates, name) or '')
local new = old and (old * (1 - weight) + x * weight) or x
redis.call('HSET', estimates, name, tostring(new))
return tostring(new)
