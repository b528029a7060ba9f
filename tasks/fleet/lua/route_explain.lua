-- Say why the pending jobs of a route wait ('' once a machine can run them):
-- each job whose reason changes gets it, and a job.unschedulable event.
-- KEYS the pending jobs' hashes; ARGV[1] reason ('' to clear), ARGV[2] now (ISO)
-- Returns how many jobs changed.
local reason, ts = ARGV[1], ARGV[2]
local changed = 0
for _, job in ipairs(KEYS) do
  if redis.call('HGET', job, 'status') == 'pending'
      and (redis.call('HGET', job, 'waiting_reason') or '') ~= reason then
    changed = changed + 1
    if reason == '' then
      redis.call('HDEL', job, 'waiting_reason')
    else
      redis.call('HSET', job, 'waiting_reason', reason)
      emit_job(EV.JOB_UNSCHEDULABLE, job, ts, {reason = reason})
    end
  end
end
return changed
