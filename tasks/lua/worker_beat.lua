-- A worker's heartbeat: refresh its record, announce it when it comes (back)
-- online, and announce the workers whose heartbeat stopped (a SIGKILL fires no
-- signal, so this is where they are seen to go).
-- KEYS[1] this worker's hash, KEYS[2] the live-workers set (scored by last beat, ms)
-- ARGV[1] hostname, ARGV[2] record (JSON), ARGV[3] liveness (s), ARGV[4] now (ms),
-- ARGV[5] now (ISO)
-- Returns the hostnames announced offline.
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[3]) * 1000
local last = redis.call('ZSCORE', KEYS[2], ARGV[1])
local record = cjson.decode(ARGV[2])
if not last or tonumber(last) < cutoff then
  emit_worker(EV.WORKER_ONLINE, ARGV[1], ARGV[5], record)
end
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_seen', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff)
for _, hostname in ipairs(gone) do
  redis.call('ZREM', KEYS[2], hostname)
  emit_worker(EV.WORKER_OFFLINE, hostname, ARGV[5], {reason = 'heartbeat_lost'})
end
return gone
