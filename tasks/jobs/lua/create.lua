-- Create a job record and its index entries in one step, and queue its broker
-- message in the same step when the broker is this Redis (tasks/jobs/dispatch.py).
-- A submission's quota is checked first, in the same step (`admission_refused`).
-- KEYS[1] job hash, KEYS[2] sequence, KEYS[3] outbox, KEYS[4] the broker list the
-- message goes to (untouched without one), KEYS[5..8] the admission's keys (untouched
-- without one), KEYS[9..] indexes to add to
-- ARGV[1] job id, ARGV[2] fields (JSON), ARGV[3] status, ARGV[4] now (ms),
-- ARGV[5] outbox due (ms, '' for none),
-- ARGV[6] the event that announces a job ('' for none), ARGV[7] now (ISO),
-- ARGV[8] the broker message, as kombu would push it ('' for none),
-- ARGV[9..13] the admission's arguments (ARGV[9] '' for none)
-- Returns the record's index score, or {refusal...} when the quota refused it.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('job exists')
end
if ARGV[9] ~= '' then
  local refused = admission_refused(KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[9], ARGV[10],
    ARGV[11], ARGV[12], ARGV[13])
  if refused then return refused end
end
local seq = redis.call('INCR', KEYS[2])
local score = tonumber(ARGV[4]) * 1000 + (seq % 1000)
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'seq', score)
set_status(KEYS[1], ARGV[3])
for i = 9, #KEYS do
  redis.call('ZADD', KEYS[i], score, ARGV[1])
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
end
-- The message before the events: a script is not rolled back, so nothing that can fail
-- may stand between the record and its message.
if ARGV[8] ~= '' then redis.call('LPUSH', KEYS[4], ARGV[8]) end
-- What names the indexes the retention sweep visits (tasks/storage/retention.py).
local owner = redis.call('HMGET', KEYS[1], 'tenant', 'type')
redis.call('SADD', INDEX_TENANTS, owner[1])
if owner[2] then redis.call('SADD', INDEX_TYPES, owner[2]) end
if ARGV[6] ~= '' then
  emit_job(ARGV[6], KEYS[1], ARGV[7], {type = redis.call('HGET', KEYS[1], 'type'),
    priority = tonumber(redis.call('HGET', KEYS[1], 'priority'))})
  local reason = redis.call('HGET', KEYS[1], 'waiting_reason')
  if reason then emit_job(EV.JOB_UNSCHEDULABLE, KEYS[1], ARGV[7], {reason = reason}) end
end
return tostring(score)
