-- Events: keep one, publish it live, queue its webhook deliveries (tasks/core/events.py).

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
