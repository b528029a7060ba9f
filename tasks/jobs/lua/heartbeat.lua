-- Renew a running job's lease and record its progress, if the lease is still ours.
-- KEYS[1] job hash, KEYS[2] leases
-- ARGV[1] lease token, ARGV[2] new deadline (ms, '' to leave), ARGV[3] progress ('' to leave),
-- ARGV[4] now (ISO)
-- Returns 1 while the lease holds, 2 while it holds and the step's workflow asks it to
-- stop (it is compensating), 0 once it was lost (the caller must stop).
local job = KEYS[1]
if redis.call('HGET', job, 'lease_token') ~= ARGV[1] then return 0 end
if redis.call('HGET', job, 'status') ~= 'running' then return 0 end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], redis.call('HGET', job, 'id'))
end
if ARGV[3] ~= '' and tonumber(ARGV[3]) > tonumber(redis.call('HGET', job, 'progress') or '0') then
  redis.call('HSET', job, 'progress', ARGV[3], 'updated_at', ARGV[4])
  emit_job(EV.JOB_PROGRESS, job, ARGV[4], {progress = tonumber(ARGV[3])})
end
if redis.call('HEXISTS', job, 'stop_requested') == 1 then return 2 end
return 1
