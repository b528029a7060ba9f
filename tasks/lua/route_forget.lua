-- Forget a route no job has used since `cutoff`, if none of its jobs is pending,
-- so that workers stop consuming its queue. A job that becomes pending on it
-- later registers it again (lib.lua `track_route`).
-- KEYS[1] routes, KEYS[2] routes used, KEYS[3] the route's pending jobs
-- ARGV[1] the route's queue, ARGV[2] cutoff (ms)
if redis.call('ZCARD', KEYS[3]) > 0 then return 0 end
local used = redis.call('ZSCORE', KEYS[2], ARGV[1])
if used and tonumber(used) >= tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
