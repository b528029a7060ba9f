-- Forget a worker process's reservations: it shut down (kombu restored what it held),
-- or a reaper restored them all. Tags received since `cutoff` (ms) are kept, with the
-- process among the reservers: it may only be starting, not yet beating.
-- KEYS[1] its reservations, KEYS[2] the reservers set
-- ARGV[1] the worker process ("hostname|boot id"), ARGV[2] cutoff (ms; '' forgets them all)
local reservations, reservers = KEYS[1], KEYS[2]
if ARGV[2] == '' then
  redis.call('DEL', reservations)
else
  local flat = redis.call('HGETALL', reservations)
  for i = 1, #flat, 2 do
    if tonumber(flat[i + 1]) <= tonumber(ARGV[2]) then redis.call('HDEL', reservations, flat[i]) end
  end
end
if redis.call('EXISTS', reservations) == 0 then redis.call('SREM', reservers, ARGV[1]) end
return redis.call('HLEN', reservations)
