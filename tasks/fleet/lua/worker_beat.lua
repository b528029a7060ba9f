-- A worker's heartbeat: refresh its record and its machine's, announce either
-- when it comes (back) online, announce the machine's changes at most every
-- interval, and announce the workers whose heartbeat stopped, with their
-- machines when no worker of theirs is left (a SIGKILL fires no signal, so this
-- is where they are seen to go).
-- KEYS[1] this worker's hash, KEYS[2] the live-workers set (scored by last beat, ms),
-- KEYS[3] its machine's hash, KEYS[4] the machines set, KEYS[5] the machine's workers
-- ARGV[1] hostname, ARGV[2] worker record (JSON), ARGV[3] liveness (s), ARGV[4] now (ms),
-- ARGV[5] now (ISO), ARGV[6] machine record (JSON), ARGV[7] machine retention (s),
-- ARGV[8] digest of what this worker shows, ARGV[9] least ms between machine.updated,
-- ARGV[10] what machine.updated says of this worker (JSON)
-- Returns the hostnames announced offline.
local hostname, now, ts = ARGV[1], tonumber(ARGV[4]), ARGV[5]
local cutoff = now - tonumber(ARGV[3]) * 1000
local last = redis.call('ZSCORE', KEYS[2], hostname)
local record = cjson.decode(ARGV[2])
if not last or tonumber(last) < cutoff then
  emit_worker(EV.WORKER_ONLINE, hostname, ts, record)
end
hset_json(KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], 'last_seen', ts)
-- Kept past the liveness window, so the beat that announces it gone can read it.
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
redis.call('ZADD', KEYS[2], now, hostname)

local machine = KEYS[3]
hset_json(machine, ARGV[6])
redis.call('HSET', machine, 'last_seen', ts)
redis.call('HSETNX', machine, 'registered_at', ts)
redis.call('ZADD', KEYS[5], now, hostname)
redis.call('ZADD', KEYS[4], now, redis.call('HGET', machine, 'id'))
-- What changed includes the models its pool process loaded (worker_models.lua).
local models = redis.call('HGET', KEYS[1], 'models_loaded') or '[]'
local digest, digest_field = ARGV[8] .. models, 'digest:' .. hostname
local status = redis.call('HGET', machine, 'status')
if status ~= 'online' and status ~= 'draining' then
  status = redis.call('HGET', machine, 'drain') == '1' and 'draining' or 'online'
  redis.call('HSET', machine, 'status', status, 'updated_at', ts, digest_field, digest,
    'updated_ms', now)
  emit_machine(EV.MACHINE_ONLINE, machine, ts, {worker = hostname})
elseif redis.call('HGET', machine, digest_field) ~= digest
    and now - tonumber(redis.call('HGET', machine, 'updated_ms') or '0') >= tonumber(ARGV[9]) then
  redis.call('HSET', machine, digest_field, digest, 'updated_ms', now)
  local update = cjson.decode(ARGV[10])
  if models ~= '[]' then update.models_loaded = cjson.decode(models) end
  emit_machine(EV.MACHINE_UPDATED, machine, ts, update)
end
redis.call('EXPIRE', machine, ARGV[7])
redis.call('EXPIRE', KEYS[5], ARGV[7])

local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. cutoff)
for _, name in ipairs(gone) do
  redis.call('ZREM', KEYS[2], name)
  emit_worker(EV.WORKER_OFFLINE, name, ts, {reason = 'heartbeat_lost'})
  machine_left(WORKER_PREFIX .. name, name, ts, 'heartbeat_lost', cutoff)
end
return gone
