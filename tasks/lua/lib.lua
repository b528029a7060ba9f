-- Shared helpers, prepended to every script by tasks/scripts.py (after the
-- EVENT_LOG, EVENT_CHANNEL and EV names it generates from tasks/events.py).
-- Index and stream key names come from the job hash (written by create.lua from
-- tasks/keys.py), so no script spells a key name of its own.

local function nullable(value)
  if value == nil or value == false or value == '' then return cjson.null end
  return value
end

local function decoded(json_text)
  if not json_text or json_text == '' then return cjson.null end
  return cjson.decode(json_text)
end

-- Append one event to the global log and to `streams` (pairs of a stream and
-- the key whose expiry it shares), then publish it live. The global log's id
-- is the event id everywhere, so every copy sorts the same way.
local function emit(etype, ts, subject, data)
  local event = {type = etype, ts = ts, tenant = nullable(subject.tenant),
    job_id = nullable(subject.job_id), workflow_id = nullable(subject.workflow_id),
    step_index = subject.step_index and tonumber(subject.step_index) or cjson.null,
    correlation_id = nullable(subject.correlation_id), worker = nullable(subject.worker),
    data = data or {}}
  local body = cjson.encode(event)
  local id = redis.call('XADD', EVENT_LOG, '*', 'event', body)
  local streams = subject.streams or {}
  for i = 1, #streams, 2 do
    -- pcall: a copy refused (an id behind the stream's last) must not abort a
    -- script whose writes have already happened.
    redis.pcall('XADD', streams[i], id, 'event', body)
    local ttl = redis.call('TTL', streams[i + 1])
    if ttl > 0 then redis.call('EXPIRE', streams[i], ttl) end
  end
  event.id = id
  redis.call('PUBLISH', EVENT_CHANNEL, cjson.encode(event))
  return id
end

local function emit_job(etype, job, ts, data)
  local f = redis.call('HMGET', job, 'id', 'tenant', 'workflow_id', 'step_index',
    'correlation_id', 'worker_id', 'events_key', 'workflow_events_key', 'workflow_key')
  local streams = {}
  if f[7] then streams = {f[7], job} end
  if f[8] then streams[#streams + 1] = f[8]; streams[#streams + 1] = f[9] end
  return emit(etype, ts, {job_id = f[1], tenant = f[2], workflow_id = f[3],
    step_index = f[4], correlation_id = f[5], worker = f[6], streams = streams}, data)
end

local function emit_workflow(etype, wf, ts, data)
  local f = redis.call('HMGET', wf, 'id', 'tenant', 'correlation_id', 'events_key')
  local streams = {}
  if f[4] then streams = {f[4], wf} end
  return emit(etype, ts, {workflow_id = f[1], tenant = f[2], correlation_id = f[3],
    streams = streams}, data)
end

local function emit_worker(etype, hostname, ts, data)
  return emit(etype, ts, {worker = hostname}, data)
end

local function set_status(job_key, new_status)
  local old = redis.call('HGET', job_key, 'status')
  local id = redis.call('HGET', job_key, 'id')
  local score = redis.call('HGET', job_key, 'seq')
  local prefixes = redis.call('HGET', job_key, 'status_index_prefixes')
  for prefix in string.gmatch(prefixes, '[^|]+') do
    if old then redis.call('ZREM', prefix .. old, id) end
    redis.call('ZADD', prefix .. new_status, score, id)
  end
  redis.call('HSET', job_key, 'status', new_status)
  return old
end

local function hset_json(job_key, fields_json)
  if fields_json == nil or fields_json == '' then return end
  local fields = cjson.decode(fields_json)
  for k, v in pairs(fields) do
    if v == cjson.null then
      redis.call('HDEL', job_key, k)
    else
      redis.call('HSET', job_key, k, tostring(v))
    end
  end
end

-- Drop the running job from the lease set and from its worker's in-flight set.
local function release(job_key, leases_key)
  local id = redis.call('HGET', job_key, 'id')
  redis.call('ZREM', leases_key, id)
  local wk = redis.call('HGET', job_key, 'worker_jobs_key')
  if wk then redis.call('SREM', wk, id) end
  redis.call('HDEL', job_key, 'lease_token', 'worker_jobs_key')
end

local function error_json(code, message, ts)
  return cjson.encode({code = code, message = message, timestamp = ts})
end

local function finish(job_key, status, ts, retention)
  set_status(job_key, status)
  redis.call('HSET', job_key, 'completed_at', ts, 'updated_at', ts)
  redis.call('HDEL', job_key, 'envelope')
  if tonumber(retention) > 0 then redis.call('EXPIRE', job_key, retention) end
end

local FINISHED = {completed = EV.JOB_COMPLETED, failed = EV.JOB_FAILED,
  cancelled = EV.JOB_CANCELLED, skipped = EV.JOB_SKIPPED}

-- A job reached a terminal status: its event says what it produced, or why not.
local function emit_finished(job, status, ts)
  local data
  if status == 'completed' then
    data = {result = decoded(redis.call('HGET', job, 'result'))}
  elseif status == 'skipped' then
    local result = decoded(redis.call('HGET', job, 'result'))
    data = {reason = result ~= cjson.null and result.reason or cjson.null}
  else
    data = {error = decoded(redis.call('HGET', job, 'error'))}
  end
  return emit_job(FINISHED[status], job, ts, data)
end

local function split(joined)
  local out = {}
  for part in string.gmatch(joined or '', '[^|]+') do out[#out + 1] = part end
  return out
end

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

-- A workflow step reached a terminal status: count it, release its dependents
-- whose dependencies are now all done, and settle the workflow. Dependents that
-- were delivered early and parked are put in the outbox and returned, for the
-- caller to publish. Jobs outside workflows are left alone.
local function settle_step(job, status, ts, retention, outbox, due)
  local wf = redis.call('HGET', job, 'workflow_key')
  if not wf or redis.call('EXISTS', wf) == 0 then return {} end
  local ready = {}
  local wf_status = redis.call('HGET', wf, 'status')
  redis.call('HSET', wf, 'updated_at', ts)
  if status == 'completed' or status == 'skipped' then
    local done = redis.call('HINCRBY', wf, 'completed_steps', 1)
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
      redis.call('HSET', wf, 'error', cjson.encode(failure))
      cancel_steps(wf, ts, retention,
        error_json('WORKFLOW_FAILED', 'Not run: ' .. message, ts), false, nil)
      finish(wf, 'failed', ts, retention)
      emit_workflow(EV.WORKFLOW_FAILED, wf, ts, {error = failure})
    end
  end
  return ready
end

-- Finish a job, say so, and settle its workflow if it is a step.
local function finish_job(job, status, ts, retention, outbox, due)
  finish(job, status, ts, retention)
  emit_finished(job, status, ts)
  return settle_step(job, status, ts, retention, outbox, due)
end
