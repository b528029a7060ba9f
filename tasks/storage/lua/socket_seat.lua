-- Take (or renew) one of a tenant's WebSocket seats; seats not renewed expire.
-- KEYS[1] the tenant's seats (a zset: socket id -> expiry, ms)
-- ARGV[1] socket id, ARGV[2] most seats, ARGV[3] a seat's lifetime (ms)
-- Returns 1 when the socket holds its seat, 0 when every seat is taken.
local seats, socket_id = KEYS[1], ARGV[1]
local most, lifetime = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', seats, '-inf', now)
if not redis.call('ZSCORE', seats, socket_id) and redis.call('ZCARD', seats) >= most then
  return 0
end
redis.call('ZADD', seats, now + lifetime, socket_id)
redis.call('PEXPIRE', seats, lifetime)
return 1
