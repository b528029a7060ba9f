-- One page of an index, newest first, optionally filtered by job type.
-- KEYS[1] index; ARGV[1] exclusive upper score ('+inf' for the first page),
-- ARGV[2] page size, ARGV[3] type filter ('' for none), ARGV[4] record key prefix,
-- ARGV[5] most entries to scan. Entries whose job expired are dropped from the index.
-- Returns {next cursor or '', job hash, job hash, ...}
local upper = ARGV[1] == '+inf' and '+inf' or ('(' .. ARGV[1])
local limit, scanned, cap = tonumber(ARGV[2]), 0, tonumber(ARGV[5])
local out, last, exhausted = {}, nil, false
while #out < limit and scanned < cap do
  local batch = redis.call('ZREVRANGEBYSCORE', KEYS[1], upper, '-inf', 'WITHSCORES', 'LIMIT', 0, 64)
  if #batch == 0 then exhausted = true break end
  for i = 1, #batch, 2 do
    local id, score = batch[i], batch[i + 1]
    last, scanned = score, scanned + 1
    local job = ARGV[4] .. id
    if redis.call('EXISTS', job) == 0 then
      redis.call('ZREM', KEYS[1], id)
    elseif ARGV[3] == '' or redis.call('HGET', job, 'type') == ARGV[3] then
      out[#out + 1] = own_fields(job)
      if #out >= limit then break end
    end
  end
  upper = '(' .. last
end
local more = (not exhausted) and last and
  redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. last) > 0
table.insert(out, 1, more and last or '')
return out
