-- A GPU slot's pool process reports on its models: the resident ones (loaded, being
-- loaded, evicted), the ones that failed to load, or that it needs replacing.
-- KEYS[1] the worker's hash; ARGV[1] field, ARGV[2] value (JSON)
-- Written only while the worker is registered, so a record never outlives it.
local worker, name, value = KEYS[1], ARGV[1], ARGV[2]
if redis.call('EXISTS', worker) == 0 then return 0 end
redis.call('HSET', worker, name, value)
return 1
