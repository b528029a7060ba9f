-- Drain a machine (it starts no new job; running ones finish) or resume it.
-- The flag outlives restarts: a drained node that comes back stays draining.
-- KEYS[1] the machine's hash
-- ARGV[1] '1' to drain, '0' to resume, ARGV[2] now (ISO)
-- Returns {'ok'|'missing', status}.
local machine = KEYS[1]
local drain, ts = ARGV[1] == '1', ARGV[2]
if redis.call('EXISTS', machine) == 0 then return {'missing', ''} end
local status = redis.call('HGET', machine, 'status')
local draining = redis.call('HGET', machine, 'drain') == '1'
if drain and not draining then
  redis.call('HSET', machine, 'drain', '1', 'updated_at', ts)
  if status == 'online' then redis.call('HSET', machine, 'status', 'draining') end
  emit_machine(EV.MACHINE_DRAINING, machine, ts, {})
elseif not drain and draining then
  redis.call('HDEL', machine, 'drain')
  redis.call('HSET', machine, 'updated_at', ts)
  if status == 'draining' then
    redis.call('HSET', machine, 'status', 'online')
    emit_machine(EV.MACHINE_ONLINE, machine, ts, {resumed = true})
  end
end
return {'ok', redis.call('HGET', machine, 'status')}
