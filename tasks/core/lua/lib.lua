-- Shared helpers, prepended to every script by tasks/core/scripts.py (after the
-- names it generates from tasks/core/events.py and tasks/core/keys.py: EVENT_LOG,
-- EVENT_CHANNEL, EVENT_FIELD, PROGRESS_FIELD, SAGA_OUTBOX, ROUTES, ROUTES_USED,
-- WORKER_PREFIX and EV) and from
-- tasks/core/metrics.py (METRICS_* and BUCKETS).
-- Key names come from KEYS, from a record's hash, or from the functions tasks/core/keys.py
-- writes into the prelude (`lua_functions`), so no script spells a key name of its own.

local function nullable(value)
  if value == nil or value == false or value == '' then return cjson.null end
  return value
end

local function decoded(json_text)
  if not json_text or json_text == '' then return cjson.null end
  return cjson.decode(json_text)
end

local function split(joined)
  local out = {}
  for part in string.gmatch(joined or '', '[^|]+') do out[#out + 1] = part end
  return out
end

-- Keep `key` as long as `record` (a job's or workflow's hash), as its events are.
local function expire_with(key, record)
  local ttl = redis.call('TTL', record)
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end

-- An event as JSON with its fields in the documented order (EVENT_ORDER, from
-- tasks/core/events.py): cjson writes a table's keys in whatever order its hash holds
-- them, which differs between Redis and Valkey, and the live path hands this text on.
local function event_json(event)
  local parts = {}
  for i, name in ipairs(EVENT_ORDER) do
    parts[i] = cjson.encode(name) .. ':' .. cjson.encode(event[name])
  end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- Queue the delivery of an event to its subject's webhook, in the step that
-- emits the event (tasks/webhooks/store.py): when the subject has one and its filter
-- (`webhook_events`, ','-wrapped event types) takes this type. The subject's
-- queue holds its undelivered ones in order; a queue that was empty puts the
-- subject into the outbox, due now.
local function queue_webhook(subject, event)
  local hooks = subject.webhooks
  if not hooks then return end
  local queue = hooks .. WEBHOOK_QUEUE_SUFFIX
  -- Every event of the subject (its final one always comes) carries the record's
  -- expiry over to its deliveries, whatever the filter takes.
  expire_with(hooks, subject.record)
  expire_with(queue, subject.record)
  if not subject.webhook_events
      or not string.find(subject.webhook_events, ',' .. event.type .. ',', 1, true) then
    return
  end
  local id = 'msg_' .. event.id
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', hooks, id, cjson.encode({id = id, event_id = event.id, type = event.type,
    url = subject.webhook_url, tenant = subject.tenant, record = subject.record,
    kind = subject.kind, status = 'pending', attempts = {}, created_ms = now,
    payload = '{"type":' .. cjson.encode(event.type) .. ',"timestamp":' ..
      cjson.encode(event.ts) .. ',"data":' .. event_json(event) .. '}'}))
  if redis.call('RPUSH', queue, id) == 1 then
    redis.call('ZADD', WEBHOOK_OUTBOX, now, hooks)
  end
  expire_with(hooks, subject.record)
  expire_with(queue, subject.record)
end

-- Keep one event and publish it live. A record's event (a job's, a workflow's) is
-- kept in the record's hash under EVENT_FIELD .. id (PROGRESS_FIELD for progress,
-- which `set_status` thins when a run ends), holding what the record does not already say; the global
-- log holds a reference to it ('job' or 'workflow', and the id) in its order. An event
-- of no record (a worker's, a machine's) is kept whole in the global log. The log's
-- id is the event's id everywhere (tasks/core/events.py reads them back).
local function emit(etype, ts, subject, data)
  local event = {type = etype, ts = ts, tenant = nullable(subject.tenant),
    job_id = nullable(subject.job_id), workflow_id = nullable(subject.workflow_id),
    step_index = subject.step_index and tonumber(subject.step_index) or cjson.null,
    correlation_id = nullable(subject.correlation_id), worker = nullable(subject.worker),
    data = data or {}}
  local id
  if subject.home then
    id = redis.call('XADD', EVENT_LOG, '*', subject.home_kind, subject.home_id)
    local own = {type = etype, ts = ts, data = event.data}
    if event.worker ~= cjson.null then own.worker = event.worker end
    local field = (etype == EV.JOB_PROGRESS and PROGRESS_FIELD or EVENT_FIELD) .. id
    redis.call('HSET', subject.home, field, cjson.encode(own))
  else
    id = redis.call('XADD', EVENT_LOG, '*', 'event', cjson.encode(event))
  end
  redis.call('HINCRBY', METRICS_EVENTS, etype, 1)
  event.id = id
  redis.call('PUBLISH', EVENT_CHANNEL, event_json(event))
  queue_webhook(subject, event)
  return id
end

-- A step's webhook fields are its workflow's (its webhook is the workflow's), so
-- its deliveries expire with the workflow. A job that is gone keeps nothing: its
-- event is kept whole in the global log.
local function emit_job(etype, job, ts, data)
  local f = redis.call('HMGET', job, 'id', 'tenant', 'workflow_id', 'step_index',
    'correlation_id', 'worker_id', 'workflow_key', 'webhooks_key', 'webhook_events',
    'webhook_url')
  return emit(etype, ts, {job_id = f[1], tenant = f[2], workflow_id = f[3],
    step_index = f[4], correlation_id = f[5], worker = f[6],
    home = f[1] and job, home_kind = 'job', home_id = f[1],
    webhooks = f[8], webhook_events = f[9], webhook_url = f[10],
    record = f[7] or job, kind = f[7] and 'workflow' or 'job'}, data)
end

local function emit_workflow(etype, wf, ts, data)
  local f = redis.call('HMGET', wf, 'id', 'tenant', 'correlation_id', 'webhooks_key',
    'webhook_events', 'webhook_url')
  return emit(etype, ts, {workflow_id = f[1], tenant = f[2], correlation_id = f[3],
    home = f[1] and wf, home_kind = 'workflow', home_id = f[1],
    webhooks = f[4], webhook_events = f[5], webhook_url = f[6],
    record = wf, kind = 'workflow'}, data)
end

local function emit_worker(etype, hostname, ts, data)
  return emit(etype, ts, {worker = hostname}, data)
end

-- A machine's event: its id (and status) in `data`, for operators only.
local function emit_machine(etype, machine, ts, data)
  data = data or {}
  data.machine_id = redis.call('HGET', machine, 'id')
  data.status = redis.call('HGET', machine, 'status')
  return emit(etype, ts, {}, data)
end

-- A worker left (shut down, or stopped beating): when it was its machine's last
-- live worker (beat after `cutoff`, ms), the machine goes offline.
local function machine_left(worker_key, hostname, ts, reason, cutoff)
  local f = redis.call('HMGET', worker_key, 'machine_key', 'machine_workers_key')
  if not f[1] then return end
  redis.call('ZREM', f[2], hostname)
  if redis.call('EXISTS', f[1]) == 1 and redis.call('HGET', f[1], 'status') ~= 'offline'
      and redis.call('ZCOUNT', f[2], cutoff, '+inf') == 0 then
    redis.call('HSET', f[1], 'status', 'offline', 'updated_at', ts)
    emit_machine(EV.MACHINE_OFFLINE, f[1], ts, {reason = reason, worker = hostname})
  end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A job's route (tasks/fleet/offers.py) counts its pending jobs, scored by when each
-- became pending: what the workers' placement reads. Whenever a job becomes
-- pending its route is (re)registered, so no pending job is ever on a route that
-- workers do not know; a job that stops pending no longer waits for a machine.
local function track_route(job_key, id, old, new_status, ms)
  local route = redis.call('HGET', job_key, 'route')
  if not route then return end
  local pending = route_pending_key(route)
  if old == 'pending' then
    if new_status == 'running' then
      local since = redis.call('ZSCORE', pending, id)
      if since then redis.call('HSET', job_key, 'queue_wait_ms', ms - tonumber(since)) end
    end
    redis.call('ZREM', pending, id)
    redis.call('HDEL', job_key, 'waiting_reason')
  end
  if new_status == 'pending' then
    redis.call('ZADD', pending, ms, id)
    redis.call('HSET', ROUTES, route, redis.call('HGET', job_key, 'route_spec'))
    redis.call('ZADD', ROUTES_USED, ms, route)
  end
end

-- Metrics (tasks/core/metrics.py): one observation of `seconds` in a histogram.
local function observe(name, label, seconds)
  local bounds, slot = BUCKETS[name], #BUCKETS[name] + 1
  for i = 1, #bounds do
    if seconds <= bounds[i] then slot = i; break end
  end
  local series = name .. '|' .. label .. '|'
  redis.call('HINCRBY', METRICS_HISTOGRAMS, series .. slot, 1)
  redis.call('HINCRBYFLOAT', METRICS_HISTOGRAMS, series .. 'sum', seconds)
end

local COUNTED = {completed = true, failed = true, cancelled = true, skipped = true,
  compensating = true, compensated = true, compensation_failed = true}
local PER_MINUTE = {completed = true, failed = true, cancelled = true}

-- Count a record's first status (`submitted`) and every entry into an outcome;
-- a job's run and queue wait are observed as it starts and ends running. `job_type` is
-- the record's type (false for a workflow).
local function count_status(key, job_type, old, new_status, ms)
  if old == new_status then return end  -- a renewed claim, not a transition
  local label = nil
  if not old then label = 'submitted' elseif COUNTED[new_status] then label = new_status end
  if not job_type then
    if label then redis.call('HINCRBY', METRICS_COUNTS, 'workflow|' .. label, 1) end
    return
  end
  if label then redis.call('HINCRBY', METRICS_COUNTS, 'job|' .. label .. '|' .. job_type, 1) end
  if new_status == 'running' and old == 'pending' then
    redis.call('HSET', key, 'started_ms', ms)
    local wait = redis.call('HGET', key, 'queue_wait_ms')
    if wait then observe('queue_wait', job_type, tonumber(wait) / 1000) end
  elseif old == 'running' and (new_status == 'completed' or new_status == 'failed') then
    local started = redis.call('HGET', key, 'started_ms')
    if started then observe('run', job_type, (ms - tonumber(started)) / 1000) end
  end
  if PER_MINUTE[new_status] then
    local minute = METRICS_MINUTE .. math.floor(ms / 60000)
    redis.call('HINCRBY', minute, new_status, 1)
    redis.call('EXPIRE', minute, METRICS_MINUTE_TTL)
  end
end

-- Which of a record's events a hash field holds: EVENT_FIELD or PROGRESS_FIELD (both
-- two characters long), or nil for one of the record's own fields.
local function event_field(name)
  local prefix = string.sub(name, 1, #EVENT_FIELD)
  if prefix == EVENT_FIELD or prefix == PROGRESS_FIELD then return prefix end
  return nil
end

-- A job that stops running (it finished, or waits to run again) keeps its last progress
-- event: the others told how that run went while it ran (tasks/core/events.py).
local function thin_progress(key)
  local last, others = nil, {}
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if event_field(name) == PROGRESS_FIELD then
      local ms, seq = string.match(name, '(%d+)-(%d+)$')
      local at = {tonumber(ms), tonumber(seq), name}
      if not last or at[1] > last[1] or (at[1] == last[1] and at[2] > last[2]) then
        if last then others[#others + 1] = last[3] end
        last = at
      else
        others[#others + 1] = name
      end
    end
  end
  if #others > 0 then redis.call('HDEL', key, unpack(others)) end
end

-- A record's status indexes: its tenant's and every tenant's (a job has a type, a
-- workflow has not).
local function status_index_prefixes(tenant, job_type)
  local prefix = job_type and status_index_prefix or workflow_status_index_prefix
  return {prefix(tenant), prefix(ALL_TENANTS)}
end

local function set_status(job_key, new_status)
  local f = redis.call('HMGET', job_key, 'status', 'id', 'seq', 'tenant', 'type')
  local old, id, score = f[1], f[2], f[3]
  for _, prefix in ipairs(status_index_prefixes(f[4], f[5])) do
    if old then redis.call('ZREM', prefix .. old, id) end
    redis.call('ZADD', prefix .. new_status, score, id)
  end
  redis.call('HSET', job_key, 'status', new_status)
  if old == 'running' and new_status ~= 'running' then thin_progress(job_key) end
  -- One clock reading per transition: the queue wait, the run time and the minute agree.
  local ms = now_ms()
  track_route(job_key, id, old, new_status, ms)
  count_status(job_key, f[5], old, new_status, ms)
  return old
end

-- Set a record's fields from a JSON object (null deletes one): one HSET, one HDEL.
local function hset_json(job_key, fields_json)
  if fields_json == nil or fields_json == '' then return end
  local set, drop = {}, {}
  for k, v in pairs(cjson.decode(fields_json)) do
    if v == cjson.null then
      drop[#drop + 1] = k
    else
      set[#set + 1] = k
      set[#set + 1] = tostring(v)
    end
  end
  if #set > 0 then redis.call('HSET', job_key, unpack(set)) end
  if #drop > 0 then redis.call('HDEL', job_key, unpack(drop)) end
end

-- A record's own fields: HGETALL less the events it keeps (tasks/core/events.py), which its
-- readers do not want and a running job may hold a hundred of.
local function own_fields(key)
  local all, own = redis.call('HGETALL', key), {}
  for i = 1, #all, 2 do
    if not event_field(all[i]) then
      own[#own + 1] = all[i]
      own[#own + 1] = all[i + 1]
    end
  end
  return own
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

-- A record reached a final status: it expires after `retention`, and so do the steps
-- whose events its history holds (a workflow's), and the stream of its events that a
-- record created before events were kept in it names (`events_key`).
local function finish(job_key, status, ts, retention)
  set_status(job_key, status)
  redis.call('HSET', job_key, 'completed_at', ts, 'updated_at', ts)
  -- What only a job on its way needs: its recovery message, its lease's hard deadline,
  -- when its run began (observed just now) and its route's spec (for when it is pending).
  redis.call('HDEL', job_key, 'envelope', 'deadline_ms', 'started_ms', 'route_spec')
  if tonumber(retention) <= 0 then return end
  redis.call('EXPIRE', job_key, retention)
  local f = redis.call('HMGET', job_key, 'step_keys', 'events_key')
  for _, step in ipairs(split(f[1])) do
    if redis.call('TTL', step) > 0 then redis.call('EXPIRE', step, retention) end
  end
  if f[2] then redis.call('EXPIRE', f[2], retention) end
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

-- A tenant's stored bytes (tasks/storage/quotas.py): a hash of the hour (since the epoch)
-- in which files expire -> their bytes. Hours gone by are dropped. Returns the
-- total, and when (ms) the soonest hour still counted ends.
local function storage_used(usage)
  local hour = math.floor(now_ms() / 3600000)
  local total, soonest = 0, nil
  local f = redis.call('HGETALL', usage)
  for i = 1, #f, 2 do
    local h = tonumber(f[i])
    if h < hour then
      redis.call('HDEL', usage, f[i])
    else
      total = total + tonumber(f[i + 1])
      if not soonest or h < soonest then soonest = h end
    end
  end
  return total, ((soonest or hour) + 1) * 3600000
end

-- Admit one submission of `jobs` jobs for a tenant (tasks/storage/quotas.py): its unfinished
-- jobs must stay within the quota, its stored files below theirs, then it takes a
-- token from its bucket. Returns nil when admitted, else {'quota', unfinished now},
-- {'storage', bytes, ms until some of them expire} or {'rate', ms until a token is
-- back}. Redis' clock, so every web process agrees.
-- keys: the token bucket (a hash: tokens, ts), the tenant's pending and waiting
-- status indexes, its storage usage; args: tokens added per second, the bucket's
-- size (the burst), jobs in this submission, most unfinished jobs, most bytes.
local function admission_refused(bucket, pending, waiting, usage, rate, burst, jobs, most,
                                 max_bytes)
  rate, burst, jobs, most = tonumber(rate), tonumber(burst), tonumber(jobs), tonumber(most)
  local unfinished = redis.call('ZCARD', pending) + redis.call('ZCARD', waiting)
  if unfinished + jobs > most then return {'quota', unfinished} end
  local now = now_ms()
  local stored, frees_at = storage_used(usage)
  if stored >= tonumber(max_bytes) then return {'storage', stored, frees_at - now} end
  local f = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens = math.min(burst, (tonumber(f[1]) or burst) + (now - (tonumber(f[2]) or now)) * rate / 1000)
  local taken = tokens >= 1
  if taken then tokens = tokens - 1 end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  if taken then return nil end
  return {'rate', math.ceil((1 - tokens) * 1000 / rate)}
end
