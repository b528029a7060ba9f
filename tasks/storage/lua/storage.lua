-- Count `bytes` of a tenant's files that expire in `hour` (negative: files deleted
-- before they expired), unless `most` is set and the tenant already stores that much.
-- KEYS[1] the tenant's usage (see tasks/core/lua/prelude/5_quotas.lua storage_used)
-- ARGV[1] bytes, ARGV[2] the hour they expire in, ARGV[3] most bytes (0: no limit),
-- ARGV[4] how long the usage outlives its newest file (ms)
-- Returns {'ok', total} or {'quota', total, ms until some of it expires}
local usage = KEYS[1]
local bytes, hour, most, keep = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4]
local total, frees_at = storage_used(usage)
if most > 0 and bytes > 0 and total >= most then
  return {'quota', total, frees_at - now_ms()}
end
if redis.call('HINCRBY', usage, hour, bytes) <= 0 then redis.call('HDEL', usage, hour) end
redis.call('PEXPIRE', usage, keep)
return {'ok', total + bytes}
