-- Move a job between statuses if it is in one of the allowed ones.
-- KEYS[1] job hash, KEYS[2] outbox, KEYS[3] leases
-- ARGV[1] allowed current statuses (','-joined), ARGV[2] new status,
-- ARGV[3] fields to set (JSON), ARGV[4] tenant that may act ('*' for any),
-- ARGV[5] lease token that must hold ('' for none), ARGV[6] outbox due (ms; '' removes),
-- ARGV[7] retention in seconds once terminal (0 keeps), ARGV[8] '1' if terminal,
-- ARGV[9] outbox due (ms) for workflow steps this releases
-- Returns {'ok'|'missing'|'conflict'|'lost', the status now, ids of parked steps
-- this made ready (to publish), id of a workflow whose compensation this queued
-- ('' if none)}. A step of a halted workflow is cancelled rather than queued again.
local job = KEYS[1]
local status = redis.call('HGET', job, 'status')
if not status then return {'missing', '', {}, ''} end
local tenant = redis.call('HGET', job, 'tenant')
if ARGV[4] ~= '*' and tenant ~= ARGV[4] then return {'missing', '', {}, ''} end
if ARGV[5] ~= '' and redis.call('HGET', job, 'lease_token') ~= ARGV[5] then
  return {'lost', status, {}, ''}
end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == status then allowed = true end
end
if not allowed then return {'conflict', status, {}, ''} end
local id = redis.call('HGET', job, 'id')
if status == 'running' then release(job, KEYS[3]) end
hset_json(job, ARGV[3])
if ARGV[6] == '' then
  redis.call('ZREM', KEYS[2], id)
else
  redis.call('ZADD', KEYS[2], ARGV[6], id)
end
if ARGV[8] == '1' then
  local ts = cjson.decode(ARGV[3])['updated_at']
  local ready, saga = finish_job(job, ARGV[2], ts, ARGV[7], KEYS[2], ARGV[9])
  return {'ok', ARGV[2], ready, saga}
end
if ARGV[2] == 'pending' and halted(job) then
  redis.call('ZREM', KEYS[2], id)
  local ready, saga = halt_step(job, cjson.decode(ARGV[3])['updated_at'], ARGV[7], KEYS[2],
    ARGV[9])
  return {'ok', 'cancelled', ready, saga}
end
set_status(job, ARGV[2])
if ARGV[2] == 'pending' then
  local fields = cjson.decode(ARGV[3])
  emit_job(EV.JOB_RETRYING, job, fields['updated_at'], {retry_count = fields['retry_count'],
    error = decoded(fields['last_error'])})
end
return {'ok', ARGV[2], {}, ''}
