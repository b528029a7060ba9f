-- Cancel a workflow: no step that has not started will start; with `terminate`,
-- running steps lose their leases too (each stops at its next progress report). With
-- `compensate`, a workflow that did some work begins its saga instead (running
-- steps are asked to stop) and ends compensated rather than cancelled.
-- KEYS[1] workflow hash, KEYS[2] leases
-- ARGV[1] tenant that may act ('*' for any), ARGV[2] now (ISO), ARGV[3] retention (s),
-- ARGV[4] reason, ARGV[5] '1' to stop running steps, ARGV[6] '1' to compensate,
-- ARGV[7] saga outbox due (ms)
-- Returns {'ok'|'missing'|'conflict', status, steps cancelled, total steps, ids stopped,
-- id of the workflow whose compensation to publish ('' if none)}
local wf = KEYS[1]
local status = redis.call('HGET', wf, 'status')
if not status then return {'missing', '', 0, 0, {}, ''} end
if ARGV[1] ~= '*' and redis.call('HGET', wf, 'tenant') ~= ARGV[1] then
  return {'missing', '', 0, 0, {}, ''}
end
local total = tonumber(redis.call('HGET', wf, 'total_steps'))
if not workflow_active(status) then return {'conflict', status, 0, total, {}, ''} end
redis.call('HSET', wf, 'cancelled_at', ARGV[2], 'cancel_reason', ARGV[4])
if ARGV[6] == '1' then
  local running, completed = step_census(wf)
  if #running + #completed > 0 then
    local cause = {code = 'WORKFLOW_CANCELLED', message = ARGV[4], timestamp = ARGV[2]}
    local count, saga = begin_compensation(wf, running, ARGV[2], ARGV[3], cause, ARGV[7])
    return {'ok', 'compensating', count, total, {}, saga}
  end
end
local count, stopped = cancel_steps(wf, ARGV[2], ARGV[3],
  error_json('WORKFLOW_CANCELLED', ARGV[4], ARGV[2]), ARGV[5] == '1', KEYS[2])
finish(wf, 'cancelled', ARGV[2], ARGV[3])
emit_workflow(EV.WORKFLOW_CANCELLED, wf, ARGV[2], {reason = ARGV[4], cancelled_steps = count,
  terminated = stopped})
return {'ok', 'cancelled', count, total, stopped, ''}
