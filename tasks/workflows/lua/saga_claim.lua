-- Take a workflow's compensation for this run, unless it is not due (not queued,
-- or waiting out a retry's backoff) or another run holds it under a live lease
-- (a duplicate delivery). A run whose lease ran out lost its worker: this one
-- takes over and goes on from the steps not yet compensated. The run keeps the
-- workflow in the saga outbox at its lease deadline, so a run that dies is
-- published again once the lease runs out.
-- KEYS[1] workflow hash
-- ARGV[1] lease token, ARGV[2] now (ms), ARGV[3] lease deadline (ms), ARGV[4] now (ISO),
-- ARGV[5] workflow id
-- Returns 'claimed', 'missing', 'skip', 'early' or 'busy'
local wf = KEYS[1]
local status = redis.call('HGET', wf, 'status')
if status ~= 'compensating' then
  redis.call('ZREM', SAGA_OUTBOX, ARGV[5])  -- expired, or its saga is over
  return status and 'skip' or 'missing'
end
if redis.call('HGET', wf, 'saga') ~= 'queued' then return 'skip' end
local now = tonumber(ARGV[2])
if tonumber(redis.call('HGET', wf, 'saga_not_before') or '0') > now then return 'early' end
if redis.call('HEXISTS', wf, 'saga_token') == 1 then
  if tonumber(redis.call('HGET', wf, 'saga_deadline')) > now then return 'busy' end
  redis.call('HINCRBY', wf, 'saga_lost', 1)
end
redis.call('HSET', wf, 'saga_token', ARGV[1], 'saga_deadline', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', wf, 'saga_not_before')
redis.call('HINCRBY', wf, 'saga_runs', 1)
redis.call('ZADD', SAGA_OUTBOX, ARGV[3], ARGV[5])
return 'claimed'
