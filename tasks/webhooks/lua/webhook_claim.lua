-- Take up to `most` subjects (jobs or workflows) whose next webhook delivery is
-- due, each for `lease` ms: the subject's oldest undelivered delivery, numbered
-- with its attempt (the fence its settle must show). The subject stays in the
-- outbox at its lease deadline, so if its deliverer dies it is due again when
-- the lease runs out, and the attempt left unsettled is recorded as lost.
-- KEYS[1] the webhook outbox
-- ARGV[1] now (ms), ARGV[2] lease (ms), ARGV[3] most subjects
-- Returns a flat list: webhooks key, delivery (JSON, its attempt in `inflight`), ...
local outbox = KEYS[1]
local now, lease, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local claimed = {}
for _, hooks in ipairs(redis.call('ZRANGEBYSCORE', outbox, '-inf', now, 'LIMIT', 0, most)) do
  local queue = hooks .. WEBHOOK_QUEUE_SUFFIX
  local id = redis.call('LINDEX', queue, 0)
  local raw = id and redis.call('HGET', hooks, id)
  while id and not raw do  -- a delivery whose record expired: skip it
    redis.call('LPOP', queue)
    id = redis.call('LINDEX', queue, 0)
    raw = id and redis.call('HGET', hooks, id)
  end
  if not raw then
    redis.call('ZREM', outbox, hooks)
  else
    local delivery = cjson.decode(raw)
    if delivery.attempts[1] == nil then delivery.attempts = {} end
    if delivery.inflight then
      table.insert(delivery.attempts, {n = delivery.inflight, at_ms = delivery.inflight_ms,
        error = 'lost: its deliverer stopped before it answered'})
    end
    delivery.inflight = #delivery.attempts + 1
    delivery.inflight_ms = now
    raw = cjson.encode(delivery)
    redis.call('HSET', hooks, id, raw)
    redis.call('ZADD', outbox, now + lease, hooks)
    claimed[#claimed + 1] = hooks
    claimed[#claimed + 1] = raw
  end
end
return claimed
