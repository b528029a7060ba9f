-- Admit one submission of `jobs` jobs for a tenant, in one step: its unfinished
-- jobs must stay within the quota, its stored files below theirs, then it takes a
-- token from its bucket.
-- KEYS[1] the token bucket (a hash: tokens, ts), KEYS[2] and KEYS[3] the tenant's
-- pending and waiting status indexes, KEYS[4] its storage usage
-- ARGV[1] tokens added per second, ARGV[2] the bucket's size (the burst),
-- ARGV[3] jobs in this submission, ARGV[4] most unfinished jobs, ARGV[5] most bytes
-- Returns {'ok'}, {'quota', unfinished now}, {'storage', bytes, ms until some of
-- them expire} or {'rate', ms until a token is back}.
-- Redis' clock, so every web process agrees.
local bucket = KEYS[1]
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local jobs, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local unfinished = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3])
if unfinished + jobs > most then return {'quota', unfinished} end
local stored, frees_at = storage_used(KEYS[4])
if stored >= tonumber(ARGV[5]) then return {'storage', stored, frees_at - now_ms()} end
local now = now_ms()
local f = redis.call('HMGET', bucket, 'tokens', 'ts')
local tokens = math.min(burst, (tonumber(f[1]) or burst) + (now - (tonumber(f[2]) or now)) * rate / 1000)
local taken = tokens >= 1
if taken then tokens = tokens - 1 end
redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
if taken then return {'ok'} end
return {'rate', math.ceil((1 - tokens) * 1000 / rate)}
