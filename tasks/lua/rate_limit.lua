-- Take `cost` tokens from a token bucket, or say how long until there are enough.
-- KEYS[1] the bucket (a hash: tokens, ts)
-- ARGV[1] tokens added per second, ARGV[2] the bucket's size (the burst), ARGV[3] cost
-- Returns {1, 0} when taken, {0, ms to wait} when not. Redis' clock, so every web
-- process agrees.
local bucket = KEYS[1]
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local f = redis.call('HMGET', bucket, 'tokens', 'ts')
local tokens = math.min(burst, (tonumber(f[1]) or burst) + (now - (tonumber(f[2]) or now)) * rate / 1000)
local taken = tokens >= cost
if taken then tokens = tokens - cost end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
if taken then return {1, 0} end
return {0, math.ceil((cost - tokens) * 1000 / rate)}
