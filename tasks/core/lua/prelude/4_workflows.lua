-- Workflows: steps that settle, halt or are cancelled, and the saga that undoes them.

local function workflow_active(status)
  return status == 'pending' or status == 'running'
end

-- Cancel a workflow's steps that have not started (and, with `running`, those
-- that have: their leases go, so their outcome can no longer be written).
-- Returns the number cancelled and the ids of the running ones among them.
local function cancel_steps(wf, ts, retention, error, running, leases_key)
  local count, stopped = 0, {}
  for _, key in ipairs(split(redis.call('HGET', wf, 'step_keys'))) do
    local status = redis.call('HGET', key, 'status')
    if status == 'waiting' or status == 'pending' or (running and status == 'running') then
      if status == 'running' then
        stopped[#stopped + 1] = redis.call('HGET', key, 'id')
        release(key, leases_key)
      end
      redis.call('HSET', key, 'error', error, 'cancelled_at', ts)
      redis.call('HDEL', key, 'parked')
      finish(key, 'cancelled', ts, retention)
      emit_finished(key, 'cancelled', ts)
      count = count + 1
    end
  end
  return count, stopped
end

-- The statuses of a workflow's steps: the keys of the running ones, the keys of
-- the completed ones (work a compensation would undo), and how many are compensated.
local function step_census(wf)
  local running, completed, compensated = {}, {}, 0
  for _, key in ipairs(split(redis.call('HGET', wf, 'step_keys'))) do
    local status = redis.call('HGET', key, 'status')
    if status == 'running' then running[#running + 1] = key
    elseif status == 'completed' or status == 'compensation_failed' then
      completed[#completed + 1] = key
    elseif status == 'compensated' then compensated = compensated + 1 end
  end
  return running, completed, compensated
end

-- Hand the workflow's compensation to a worker, once: the `saga` field says it
-- is queued, and the saga outbox covers a publish that is lost. Returns the
-- workflow id, for the caller to publish the compensation task.
local function queue_saga(wf, due)
  local id = redis.call('HGET', wf, 'id')
  redis.call('HSET', wf, 'saga', 'queued')
  redis.call('ZADD', SAGA_OUTBOX, due, id)
  return id
end

-- Ask the running steps to stop (their handlers decide whether they can) and
-- queue the compensation now if none runs, else when the last one settles.
-- Returns the indices of the running steps and the id to publish ('' if none).
local function await_running(wf, running, due)
  local indices = {}
  for _, key in ipairs(running) do
    redis.call('HSET', key, 'stop_requested', '1')
    indices[#indices + 1] = tonumber(redis.call('HGET', key, 'step_index'))
  end
  if #running > 0 then
    redis.call('HSET', wf, 'saga', 'waiting')
    return indices, ''
  end
  return indices, queue_saga(wf, due)
end

-- The saga begins: in this one step no further step can start, the unstarted
-- ones are cancelled and the compensation is queued (or awaits the `running`
-- steps, from step_census). `cause` is the workflow's error. Returns the number
-- of steps cancelled and the id to publish.
local function begin_compensation(wf, running, ts, retention, cause, due)
  set_status(wf, 'compensating')
  redis.call('HSET', wf, 'error', cjson.encode(cause), 'updated_at', ts,
    'compensation_started_at', ts)
  local indices, saga = await_running(wf, running, due)
  emit_workflow(EV.WORKFLOW_COMPENSATING, wf, ts, {error = cause, running_steps = indices})
  local cancelled = cancel_steps(wf, ts, retention,
    error_json('WORKFLOW_COMPENSATING', 'Not run: ' .. cause.message, ts), false, nil)
  return cancelled, saga
end

-- Whether a job is a step of a workflow that no longer starts steps (failed,
-- cancelled, compensating, ...): such a step must be cancelled, not run or requeued.
local function halted(job)
  local wf = redis.call('HGET', job, 'workflow_key')
  if not wf then return false end
  local status = redis.call('HGET', wf, 'status')
  return status ~= false and not workflow_active(status)
end

-- A workflow step reached a terminal status: count it, release its dependents
-- whose dependencies are now all done, and settle the workflow. Dependents that
-- were delivered early and parked are put in the outbox and returned, for the
-- caller to publish, with the workflow id when its compensation is now queued
-- ('' if not). Jobs outside workflows are left alone.
local function settle_step(job, status, ts, retention, outbox, due)
  local wf = redis.call('HGET', job, 'workflow_key')
  if not wf or redis.call('EXISTS', wf) == 0 then return {}, '' end
  local ready, saga = {}, ''
  local wf_status = redis.call('HGET', wf, 'status')
  redis.call('HSET', wf, 'updated_at', ts)
  if status == 'completed' or status == 'skipped' then
    local done = redis.call('HINCRBY', wf, 'completed_steps', 1)
    if status == 'completed' then
      -- Completion order: the saga undoes the latest-completed first.
      redis.call('HSET', job, 'completion_seq', redis.call('HINCRBY', wf, 'completion_seq', 1))
    end
    for _, dep in ipairs(split(redis.call('HGET', job, 'dependent_keys'))) do
      local left = redis.call('HINCRBY', dep, 'deps_left', -1)
      if left <= 0 and redis.call('HGET', dep, 'status') == 'waiting' then
        set_status(dep, 'pending')
        redis.call('HSET', dep, 'updated_at', ts)
        emit_job(EV.JOB_QUEUED, dep, ts, {type = redis.call('HGET', dep, 'type')})
        if redis.call('HDEL', dep, 'parked') == 1 then
          local id = redis.call('HGET', dep, 'id')
          redis.call('ZADD', outbox, due, id)
          ready[#ready + 1] = id
        end
      end
    end
    if workflow_active(wf_status) and done >= tonumber(redis.call('HGET', wf, 'total_steps')) then
      finish(wf, 'completed', ts, retention)
      emit_workflow(EV.WORKFLOW_COMPLETED, wf, ts, {total_steps = done})
    end
  elseif status == 'failed' then
    redis.call('HINCRBY', wf, 'failed_steps', 1)
    if workflow_active(wf_status) then
      local index = redis.call('HGET', job, 'step_index')
      local cause = cjson.decode(redis.call('HGET', job, 'error') or '{}')
      local message = 'Step ' .. index .. ' failed: ' .. tostring(cause.message or cause.code or '')
      local failure = {code = 'STEP_FAILED', message = message, step_index = tonumber(index),
        job_id = redis.call('HGET', job, 'id'), timestamp = ts}
      local running, completed = step_census(wf)
      if #running + #completed > 0 then
        local _, queued = begin_compensation(wf, running, ts, retention, failure, due)
        return ready, queued
      end
      -- Nothing was done, so nothing is undone: the workflow simply failed.
      redis.call('HSET', wf, 'error', cjson.encode(failure))
      cancel_steps(wf, ts, retention,
        error_json('WORKFLOW_FAILED', 'Not run: ' .. message, ts), false, nil)
      finish(wf, 'failed', ts, retention)
      emit_workflow(EV.WORKFLOW_FAILED, wf, ts, {error = failure})
    end
  end
  if wf_status == 'compensating' and redis.call('HGET', wf, 'saga') == 'waiting'
      and #step_census(wf) == 0 then
    saga = queue_saga(wf, due)
  end
  return ready, saga
end

-- Cancel a step of a halted workflow instead of running or requeueing it.
local function halt_step(job, ts, retention, outbox, due)
  local wf_status = redis.call('HGET', redis.call('HGET', job, 'workflow_key'), 'status')
  redis.call('HSET', job, 'error', error_json('WORKFLOW_HALTED',
    'Not run: the workflow is ' .. wf_status, ts), 'cancelled_at', ts)
  redis.call('HDEL', job, 'parked')
  finish(job, 'cancelled', ts, retention)
  emit_finished(job, 'cancelled', ts)
  return settle_step(job, 'cancelled', ts, retention, outbox, due)
end

-- Finish a job, say so, and settle its workflow if it is a step.
local function finish_job(job, status, ts, retention, outbox, due)
  finish(job, status, ts, retention)
  emit_finished(job, status, ts)
  return settle_step(job, status, ts, retention, outbox, due)
end

-- The saga let go of the workflow: nothing is queued, held or awaited any more.
local function end_saga(wf)
  redis.call('HDEL', wf, 'saga', 'saga_token', 'saga_deadline', 'saga_not_before')
  redis.call('ZREM', SAGA_OUTBOX, redis.call('HGET', wf, 'id'))
end

-- A step's compensation failed for good. The saga stops there (the steps before
-- it in the order stay as they are, so undoing still goes in reverse) and the
-- workflow ends compensation_failed, naming the step and the error.
local function fail_compensation(wf, step, err, ts, retention)
  set_status(step, 'compensation_failed')
  redis.call('HSET', step, 'compensation_error', cjson.encode(err), 'updated_at', ts)
  emit_job(EV.STEP_COMPENSATION_FAILED, step, ts, {error = err,
    attempts = tonumber(redis.call('HGET', step, 'compensation_attempts') or '0')})
  local index = redis.call('HGET', step, 'step_index')
  local failure = {code = 'COMPENSATION_FAILED',
    message = 'Compensation of step ' .. index .. ' failed: ' .. tostring(err.message or err.code),
    step_index = tonumber(index), job_id = redis.call('HGET', step, 'id'), cause = err,
    timestamp = ts}
  end_saga(wf)
  redis.call('HSET', wf, 'compensation_error', cjson.encode(failure))
  finish(wf, 'compensation_failed', ts, retention)
  emit_workflow(EV.WORKFLOW_COMPENSATION_FAILED, wf, ts, {error = failure})
end
