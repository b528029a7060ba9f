-- Start one attempt at compensating a step, under the run's lease.
-- KEYS[1] workflow hash, KEYS[2] step job hash
-- ARGV[1] lease token, ARGV[2] attempts a run allows, ARGV[3] now (ISO), ARGV[4] retention (s)
-- Returns {'ok', attempt, attempts used of those allowed}, or {'done' (compensated
-- already), 'skip' (nothing to undo), 'lost' (the lease) or 'exhausted', attempts, 0}
local wf, step = KEYS[1], KEYS[2]
if redis.call('HGET', wf, 'saga_token') ~= ARGV[1] then return {'lost', 0, 0} end
local status = redis.call('HGET', step, 'status')
local attempts = tonumber(redis.call('HGET', step, 'compensation_attempts') or '0')
if status == 'compensated' then return {'done', attempts, 0} end
if status ~= 'completed' and status ~= 'compensation_failed' then
  return {'skip', attempts, 0}
end
local allowed = tonumber(ARGV[2])
local used = attempts - tonumber(redis.call('HGET', step, 'compensation_base') or '0')
if used >= allowed then
  -- An attempt that fails says so; these were all made and the last was lost
  -- with its worker (a compensation that kills its worker every time).
  fail_compensation(wf, step, {code = 'WORKER_LOST', timestamp = ARGV[3],
    message = 'Attempt ' .. attempts .. ' was lost with its worker'}, ARGV[3], ARGV[4])
  return {'exhausted', attempts, used}
end
redis.call('HINCRBY', step, 'compensation_attempts', 1)
return {'ok', attempts + 1, used + 1}
