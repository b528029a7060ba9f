-- A record's life: its route, metrics, status indexes, fields, and its end.

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
