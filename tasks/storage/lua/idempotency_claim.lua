-- Claim an Idempotency-Key for one request, or say what became of it.
-- KEYS[1] the key's record (tenant-scoped)
-- ARGV[1] fingerprint of the request body, ARGV[2] seconds a claim lives before it
-- is answered (a crashed request frees its key then)
local record, fingerprint, claim_ttl = KEYS[1], ARGV[1], ARGV[2]
local known = redis.call('HGET', record, 'fingerprint')
if not known then
  redis.call('HSET', record, 'fingerprint', fingerprint, 'state', 'pending')
  redis.call('EXPIRE', record, claim_ttl)
  return {'claimed'}
end
if known ~= fingerprint then return {'reused'} end
local f = redis.call('HMGET', record, 'state', 'status', 'body')
return {f[1], f[2] or '', f[3] or ''}
