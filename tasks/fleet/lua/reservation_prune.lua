-- A live worker's beat: forget the messages it has acknowledged since the last one,
-- and say it holds some (a new process, or one a reaper took for dead and emptied).
-- KEYS[1] its reservations, KEYS[2] kombu's unacked hash, KEYS[3] the reservers set
-- ARGV[1] the worker process ("hostname|boot id")
local reservations, unacked, reservers = KEYS[1], KEYS[2], KEYS[3]
local tags = redis.call('HKEYS', reservations)
for _, tag in ipairs(tags) do
  if redis.call('HEXISTS', unacked, tag) == 0 then redis.call('HDEL', reservations, tag) end
end
redis.call('SADD', reservers, ARGV[1])
return redis.call('HLEN', reservations)
