-- Record how one delivery attempt went, unless the attempt is stale (its lease
-- ran out and the delivery was taken again, or it is already settled).
-- 'retry' makes the delivery due again at `next_ms`. 'delivered' and 'failed'
-- end it: it leaves its subject's queue, the next one is due now, and its event
-- (webhook.delivered or webhook.failed) goes into the subject's history.
-- KEYS[1] the subject's webhooks hash, KEYS[2] the webhook outbox
-- ARGV[1] delivery id, ARGV[2] attempt, ARGV[3] outcome, ARGV[4] now (ms),
-- ARGV[5] next attempt (ms, retry only), ARGV[6] the attempt's detail (JSON:
-- status_code, error, duration_ms), ARGV[7] now (ISO)
-- Returns 'settled', 'stale' or 'missing'
local hooks, outbox = KEYS[1], KEYS[2]
local id, attempt, outcome = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local now, next_ms, ts = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[7]
local detail = cjson.decode(ARGV[6])
local raw = redis.call('HGET', hooks, id)
if not raw then return 'missing' end
local delivery = cjson.decode(raw)
if delivery.status ~= 'pending' or delivery.inflight ~= attempt then return 'stale' end
if delivery.attempts[1] == nil then delivery.attempts = {} end
detail.n, detail.at_ms = attempt, delivery.inflight_ms
table.insert(delivery.attempts, detail)
delivery.inflight, delivery.inflight_ms = nil, nil
local queue = hooks .. WEBHOOK_QUEUE_SUFFIX
if outcome == 'retry' then
  delivery.next_ms = next_ms
  redis.call('HSET', hooks, id, cjson.encode(delivery))
  redis.call('ZADD', outbox, next_ms, hooks)
  return 'settled'
end
delivery.status, delivery.next_ms, delivery.finished_ms = outcome, nil, now
redis.call('HSET', hooks, id, cjson.encode(delivery))
redis.call('LREM', queue, 1, id)
if redis.call('LLEN', queue) > 0 then
  redis.call('ZADD', outbox, now, hooks)
else
  redis.call('ZREM', outbox, hooks)
end
if redis.call('EXISTS', delivery.record) == 1 then
  local etype = outcome == 'delivered' and EV.WEBHOOK_DELIVERED or EV.WEBHOOK_FAILED
  local data = {delivery_id = id, event_id = delivery.event_id, event_type = delivery.type,
    attempts = #delivery.attempts, status_code = detail.status_code, error = detail.error}
  if delivery.kind == 'workflow' then
    emit_workflow(etype, delivery.record, ts, data)
  else
    emit_job(etype, delivery.record, ts, data)
  end
  expire_with(hooks, delivery.record)
  expire_with(queue, delivery.record)
end
return 'settled'
