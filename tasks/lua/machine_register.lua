-- An operator registers a machine (or changes its labels) before or after it
-- comes online; a node that beats with this id takes the labels.
-- KEYS[1] the machine's hash, KEYS[2] the machines set
-- ARGV[1] machine id, ARGV[2] the operator's labels (JSON), ARGV[3] now (ISO),
-- ARGV[4] retention (s)
-- Returns 1 when the machine was new, 0 when it was known.
local created = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'operator_labels', ARGV[2], 'updated_at', ARGV[3])
redis.call('HSETNX', KEYS[1], 'status', 'offline')
redis.call('HSETNX', KEYS[1], 'registered_at', ARGV[3])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[1])
if redis.call('HGET', KEYS[1], 'status') == 'offline' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
return created and 1 or 0
