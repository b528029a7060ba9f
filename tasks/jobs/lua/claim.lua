-- Take a delivered job for execution, unless it is finished, cancelled or
-- running under a live lease elsewhere (a duplicate delivery), or this worker's
-- machine is draining (then the job goes back to its queue for another machine).
-- KEYS[1] job hash, KEYS[2] outbox, KEYS[3] leases, KEYS[4] this worker's in-flight set,
-- KEYS[5] this worker's machine hash
-- ARGV[1] lease token, ARGV[2] now (ms), ARGV[3] lease deadline (ms),
-- ARGV[4] worker id, ARGV[5] machine id, ARGV[6] now (ISO), ARGV[7] max deliveries,
-- ARGV[8] hard deadline (ms), ARGV[9] retention (s),
-- ARGV[10] the message's canvas context (workflow steps; '' for plain jobs),
-- ARGV[11] where it runs, set on the job (JSON: the GPU), ARGV[12] outbox due (ms)
-- Returns {outcome, status, job hash as a flat list}. A step delivered before
-- its dependencies completed is `parked` with its context, for the step that
-- completes them to publish again; a step of a halted workflow is cancelled.
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return {'missing', '', {}} end
local id = redis.call('HGET', job, 'id')
if redis.call('HGET', KEYS[5], 'drain') == '1' and status == 'pending' then
  -- Handed back: the caller publishes it again at once, the outbox if that fails.
  if ARGV[10] ~= '' then redis.call('HSET', job, 'envelope', ARGV[10]) end
  redis.call('ZADD', KEYS[2], ARGV[12], id)
  return {'draining', status, {}}
end
redis.call('ZREM', KEYS[2], id)
if status == 'running' then
  local deadline = redis.call('ZSCORE', KEYS[3], id)
  if deadline and tonumber(deadline) > tonumber(ARGV[2]) then
    return {'busy', status, {}}
  end
  -- The previous run's lease expired: its worker died or stalled.
  release(job, KEYS[3])
  local lost = redis.call('HINCRBY', job, 'lost', 1)
  if lost >= tonumber(ARGV[7]) then
    local msg = 'Job was delivered ' .. lost .. ' times and its worker was lost each time'
    redis.call('HSET', job, 'error', error_json('WORKER_LOST', msg, ARGV[6]))
    finish_job(job, 'failed', ARGV[6], ARGV[9], KEYS[2], ARGV[2])
    return {'poisoned', 'failed', {}}
  end
elseif status == 'waiting' and ARGV[10] ~= '' then
  redis.call('HSET', job, 'parked', '1', 'envelope', ARGV[10])
  return {'parked', status, {}}
elseif status ~= 'pending' then
  return {'skip', status, {}}
end
if halted(job) then
  halt_step(job, ARGV[6], ARGV[9], KEYS[2], ARGV[2])
  return {'skip', 'cancelled', {}}
end
set_status(job, 'running')
redis.call('HINCRBY', job, 'attempts', 1)
redis.call('HSET', job, 'lease_token', ARGV[1], 'worker_jobs_key', KEYS[4],
  'worker_id', ARGV[4], 'machine_id', ARGV[5], 'started_at', ARGV[6],
  'updated_at', ARGV[6], 'deadline_ms', ARGV[8], 'progress', 0)
if ARGV[10] ~= '' then redis.call('HSET', job, 'envelope', ARGV[10]) end
hset_json(job, ARGV[11])
redis.call('ZADD', KEYS[3], ARGV[3], id)
redis.call('SADD', KEYS[4], id)
local wf = redis.call('HGET', job, 'workflow_key')
if wf and redis.call('HGET', wf, 'status') == 'pending' then
  set_status(wf, 'running')
  redis.call('HSET', wf, 'started_at', ARGV[6], 'updated_at', ARGV[6])
  emit_workflow(EV.WORKFLOW_STARTED, wf, ARGV[6], {})
end
emit_job(EV.JOB_STARTED, job, ARGV[6], {attempt = tonumber(redis.call('HGET', job, 'attempts')),
  machine_id = ARGV[5]})
return {'claimed', 'running', own_fields(job)}
