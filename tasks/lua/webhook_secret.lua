-- Make `secret` the tenant's webhook signing secret. The one it replaces keeps
-- verifying (deliveries are signed with both) until the grace period ends.
-- KEYS[1] the tenant's secrets (a hash: current, previous, previous_until)
-- ARGV[1] the new secret, ARGV[2] the end of the grace period (ms)
local secrets, secret, grace_until = KEYS[1], ARGV[1], ARGV[2]
local current = redis.call('HGET', secrets, 'current')
if current then
  redis.call('HSET', secrets, 'previous', current, 'previous_until', grace_until)
else
  redis.call('HDEL', secrets, 'previous', 'previous_until')
end
redis.call('HSET', secrets, 'current', secret)
return 'ok'
