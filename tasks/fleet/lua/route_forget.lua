-- Forget a route no job has used since `cutoff`, if none of its jobs is pending,
-- so that workers stop consuming its queue. A job that becomes pending on it
-- later registers it again (tasks/core/lua/prelude/3_records.lua `track_route`).
-- KEYS[1] routes, KEYS[2] routes used, KEYS[3] the route's pending jobs
-- ARGV[1] the route's queue, ARGV[2] cutoff (ms)
local routes, used_at, pending = KEYS[1], KEYS[2], KEYS[3]
local queue, cutoff = ARGV[1], tonumber(ARGV[2])
if redis.call('ZCARD', pending) > 0 then return 0 end
local used = redis.call('ZSCORE', used_at, queue)
if used and tonumber(used) >= cutoff then return 0 end
redis.call('HDEL', routes, queue)
redis.call('ZREM', used_at, queue)
return 1
