-- Record how one attempt at compensating a step went, under the run's lease:
-- `compensated`; `retry` (the run lets go, and the compensation is published
-- again after the backoff); or `failed` (retries exhausted: the saga stops).
-- KEYS[1] workflow hash, KEYS[2] step job hash
-- ARGV[1] lease token, ARGV[2] outcome, ARGV[3] the compensation's result or error (JSON),
-- ARGV[4] now (ISO), ARGV[5] retention (s), ARGV[6] retry not before (ms),
-- ARGV[7] saga outbox due for the retry (ms)
-- Returns 'ok' or 'lost'
local wf, step = KEYS[1], KEYS[2]
if redis.call('HGET', wf, 'saga_token') ~= ARGV[1] then return 'lost' end
local detail = cjson.decode(ARGV[3])
if ARGV[2] == 'compensated' then
  set_status(step, 'compensated')
  redis.call('HSET', step, 'compensated_at', ARGV[4], 'updated_at', ARGV[4])
  redis.call('HDEL', step, 'compensation_error', 'stop_requested')
  emit_job(EV.STEP_COMPENSATED, step, ARGV[4], {result = detail,
    attempt = tonumber(redis.call('HGET', step, 'compensation_attempts'))})
elseif ARGV[2] == 'retry' then
  redis.call('HSET', step, 'compensation_error', ARGV[3], 'updated_at', ARGV[4])
  redis.call('HSET', wf, 'saga_not_before', ARGV[6])
  redis.call('HDEL', wf, 'saga_token', 'saga_deadline')
  redis.call('ZADD', SAGA_OUTBOX, ARGV[7], redis.call('HGET', wf, 'id'))
else
  fail_compensation(wf, step, detail, ARGV[4], ARGV[5])
end
return 'ok'
