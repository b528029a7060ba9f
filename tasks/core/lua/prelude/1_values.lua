-- The prelude: prepended, in the order of these files' names, to every script by
-- tasks/core/scripts.py, after the names it generates from tasks/core/events.py and
-- tasks/core/keys.py (EVENT_LOG, EVENT_CHANNEL, EVENT_FIELD, PROGRESS_FIELD,
-- SAGA_OUTBOX, ROUTES, ROUTES_USED, WORKER_PREFIX, EV, EVENT_ORDER) and from
-- tasks/core/metrics.py (METRICS_* and BUCKETS). Key names come from KEYS, from a
-- record's hash, or from the functions tasks/core/keys.py writes into the prelude
-- (`lua_functions`), so no script spells a key name of its own.
--
-- Small helpers on values and keys that every other part uses.

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
