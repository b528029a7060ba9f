-- A GPU slot's resident models changed (loaded, being loaded, evicted).
-- KEYS[1] the worker's hash; ARGV[1] the models, most recently used first (JSON)
-- Written only while the worker is registered, so a record never outlives it.
local worker, models = KEYS[1], ARGV[1]
if redis.call('EXISTS', worker) == 0 then return 0 end
redis.call('HSET', worker, 'models_loaded', models)
return 1
