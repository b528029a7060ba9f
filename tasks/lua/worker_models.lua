-- A GPU slot's resident models changed (loaded, being loaded, evicted).
-- KEYS[1] the worker's hash; ARGV[1] the models, most recently used first (JSON)
-- Written only while the worker is registered, so a record never outlives it.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'models_loaded', ARGV[1])
return 1
