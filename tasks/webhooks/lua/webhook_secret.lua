-- A tenant's webhook signing secret: make `secret` the current one ('rotate'), or
-- keep the current one and make `secret` current only where there is none yet
-- ('ensure', a tenant's first webhook). A rotated-out secret keeps verifying
-- (deliveries are signed with both) until the grace period ends.
-- KEYS[1] the tenant's secrets (a hash: current, previous, previous_until)
-- ARGV[1] the new secret, ARGV[2] the end of the grace period (ms), ARGV[3] the mode
-- Returns the current secret.
local secrets, secret, grace_until, mode = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local current = redis.call('HGET', secrets, 'current')
if mode == 'ensure' and current then
  return current
end
if current then
  redis.call('HSET', secrets, 'previous', current, 'previous_until', grace_until)
else
  redis.call('HDEL', secrets, 'previous', 'previous_until')
end
redis.call('HSET', secrets, 'current', secret)
return secret
