-- A worker shutting down says goodbye, so it shows offline at once (and its
-- machine too, when it was the machine's last worker).
-- KEYS[1] the worker's hash, KEYS[2] the live-workers set
-- ARGV[1] hostname, ARGV[2] now (ISO), ARGV[3] liveness cutoff (ms)
local worker, workers = KEYS[1], KEYS[2]
local hostname, ts, cutoff = ARGV[1], ARGV[2], ARGV[3]
machine_left(worker, hostname, ts, 'shutdown', cutoff)
redis.call('DEL', worker)
if redis.call('ZREM', workers, hostname) == 1 then
  emit_worker(EV.WORKER_OFFLINE, hostname, ts, {reason = 'shutdown'})
end
return 1
