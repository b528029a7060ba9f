-- A worker shutting down says goodbye, so it shows offline at once (and its
-- machine too, when it was the machine's last worker).
-- KEYS[1] the worker's hash, KEYS[2] the live-workers set
-- ARGV[1] hostname, ARGV[2] now (ISO), ARGV[3] liveness cutoff (ms)
machine_left(KEYS[1], ARGV[1], ARGV[2], 'shutdown', ARGV[3])
redis.call('DEL', KEYS[1])
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  emit_worker(EV.WORKER_OFFLINE, ARGV[1], ARGV[2], {reason = 'shutdown'})
end
return 1
