-- Shared helpers, prepended to every script by tasks/scripts.py.
-- Index key names come from the job hash (written by create.lua from
-- tasks/keys.py), so no script spells a key name of its own.

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
  if tonumber(retention) > 0 then redis.call('EXPIRE', job_key, retention) end
end
