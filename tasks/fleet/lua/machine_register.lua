-- An operator registers a machine (or changes its labels) before or after it
-- comes online; a node that beats with this id takes the labels.
-- KEYS[1] the machine's hash, KEYS[2] the machines set
-- ARGV[1] machine id, ARGV[2] the operator's labels (JSON), ARGV[3] now (ISO),
-- ARGV[4] retention (s)
-- Returns 1 when the machine was new, 0 when it was known.
local machine, machines = KEYS[1], KEYS[2]
local id, labels, ts, retention = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local created = redis.call('EXISTS', machine) == 0
redis.call('HSET', machine, 'id', id, 'operator_labels', labels, 'updated_at', ts)
redis.call('HSETNX', machine, 'status', 'offline')
redis.call('HSETNX', machine, 'registered_at', ts)
redis.call('ZADD', machines, 'NX', 0, id)
if redis.call('HGET', machine, 'status') == 'offline' then
  redis.call('EXPIRE', machine, retention)
end
return created and 1 or 0
