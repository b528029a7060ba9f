-- Hand one message a dead worker held back to its queue, as kombu's own restore
-- does (at the front: kombu's consumers pop from the right), unless the worker no
-- longer held it: acknowledged since, or restored and delivered to another worker
-- (kombu's own restore, at the visibility timeout, keeps a message's delivery tag, so
-- the index then has a later reservation; this one gives it a fresh tag).
-- KEYS[1] the worker's reservations, KEYS[2] kombu's unacked hash,
-- KEYS[3] kombu's unacked index, KEYS[4] the list the message goes back to
local reservations, unacked, unacked_index, queue = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local tag = ARGV[1]
-- The unacked entry the caller read, and the message to push (marked redelivered).
local entry, message = ARGV[2], ARGV[3]
-- When (ms) the dead worker received it.
local received_ms = tonumber(ARGV[4])
redis.call('HDEL', reservations, tag)
if redis.call('HGET', unacked, tag) ~= entry then return 0 end
local reserved_at = redis.call('ZSCORE', unacked_index, tag)
-- kombu scores its index in seconds when it reserves, just before the worker hears of it.
if reserved_at and tonumber(reserved_at) * 1000 > received_ms + 1 then return 0 end
redis.call('RPUSH', queue, message)
redis.call('HDEL', unacked, tag)
redis.call('ZREM', unacked_index, tag)
return 1
