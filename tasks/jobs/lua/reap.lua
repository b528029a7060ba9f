-- Recover a running job whose lease expired: queue it again, or fail it when it
-- outlived its hard time limit or lost its worker too many times.
-- KEYS[1] job hash, KEYS[2] outbox, KEYS[3] leases
-- ARGV[1] job id, ARGV[2] now (ms), ARGV[3] max deliveries, ARGV[4] outbox due (ms),
-- ARGV[5] now (ISO), ARGV[6] retention (s)
-- Returns 'alive', 'gone', 'requeued', 'halted' (a step of a stopped workflow, now
-- cancelled), 'timed_out' or 'poisoned'
local job = KEYS[1]
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[1])
if deadline and tonumber(deadline) > tonumber(ARGV[2]) then return 'alive' end
if redis.call('HGET', job, 'status') ~= 'running' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 'gone'
end
release(job, KEYS[3])
local lost = redis.call('HINCRBY', job, 'lost', 1)
local hard = tonumber(redis.call('HGET', job, 'deadline_ms') or '0')
if hard > 0 and hard < tonumber(ARGV[2]) then
  redis.call('HSET', job, 'error', error_json('JOB_TIMEOUT', 'Job exceeded its time limit', ARGV[5]))
  finish_job(job, 'failed', ARGV[5], ARGV[6], KEYS[2], ARGV[4])
  return 'timed_out'
end
if lost >= tonumber(ARGV[3]) then
  local msg = 'Job was delivered ' .. lost .. ' times and its worker was lost each time'
  redis.call('HSET', job, 'error', error_json('WORKER_LOST', msg, ARGV[5]))
  finish_job(job, 'failed', ARGV[5], ARGV[6], KEYS[2], ARGV[4])
  return 'poisoned'
end
if halted(job) then
  halt_step(job, ARGV[5], ARGV[6], KEYS[2], ARGV[4])
  return 'halted'
end
set_status(job, 'pending')
redis.call('HSET', job, 'updated_at', ARGV[5])
emit_job(EV.JOB_RETRYING, job, ARGV[5], {lost = lost,
  error = decoded(error_json('WORKER_LOST', 'The worker running it was lost', ARGV[5]))})
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
return 'requeued'
