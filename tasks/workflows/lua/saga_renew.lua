-- Renew a compensation run's lease, if it is still this run's.
-- KEYS[1] workflow hash
-- ARGV[1] lease token, ARGV[2] new deadline (ms)
-- Returns 1 while the lease holds, 0 once it was lost (the run must stop).
if redis.call('HGET', KEYS[1], 'saga_token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'saga_deadline', ARGV[2])
redis.call('ZADD', SAGA_OUTBOX, 'XX', 'GT', ARGV[2], redis.call('HGET', KEYS[1], 'id'))
return 1
