-- An operator (re)starts the compensation of a workflow that ended without
-- success: after compensation_failed, or to undo a cancelled workflow's
-- completed steps. Steps already compensated stay so; the others get a fresh
-- allowance of attempts.
-- KEYS[1] workflow hash
-- ARGV[1] tenant that may act ('*' for any), ARGV[2] now (ISO), ARGV[3] saga outbox due (ms)
-- Returns {'ok'|'missing'|'conflict'|'nothing', status, id of the workflow to publish
-- ('' if none yet)}
local wf = KEYS[1]
local status = redis.call('HGET', wf, 'status')
if not status then return {'missing', '', ''} end
if ARGV[1] ~= '*' and redis.call('HGET', wf, 'tenant') ~= ARGV[1] then
  return {'missing', '', ''}
end
if status ~= 'cancelled' and status ~= 'compensation_failed' then
  return {'conflict', status, ''}
end
local running, completed = step_census(wf)
if #running + #completed == 0 then return {'nothing', status, ''} end
for _, key in ipairs(completed) do
  redis.call('HSET', key, 'compensation_base',
    redis.call('HGET', key, 'compensation_attempts') or '0')
end
set_status(wf, 'compensating')
redis.call('PERSIST', wf)
redis.call('HDEL', wf, 'completed_at', 'compensation_error')
redis.call('HSET', wf, 'updated_at', ARGV[2], 'compensation_started_at', ARGV[2])
local indices, saga = await_running(wf, running, ARGV[3])
emit_workflow(EV.WORKFLOW_COMPENSATING, wf, ARGV[2], {restarted = true, running_steps = indices,
  error = decoded(redis.call('HGET', wf, 'error'))})
return {'ok', 'compensating', saga}
