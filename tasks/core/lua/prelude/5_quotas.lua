-- Quotas: a tenant's stored bytes and the admission of a submission (tasks/storage/quotas.py).

-- A tenant's stored bytes (tasks/storage/quotas.py): a hash of the hour (since the epoch)
-- in which files expire -> their bytes. Hours gone by are dropped. Returns the
-- total, and when (ms) the soonest hour still counted ends.
local function storage_used(usage)
  local hour = math.floor(now_ms() / 3600000)
  local total, soonest = 0, nil
  local f = redis.call('HGETALL', usage)
  for i = 1, #f, 2 do
    local h = tonumber(f[i])
    if h < hour then
      redis.call('HDEL', usage, f[i])
    else
      total = total + tonumber(f[i + 1])
      if not soonest or h < soonest then soonest = h end
    end
  end
  return total, ((soonest or hour) + 1) * 3600000
end

-- Admit one submission of `jobs` jobs for a tenant (tasks/storage/quotas.py): its unfinished
-- jobs must stay within the quota, its stored files below theirs, then it takes a
-- token from its bucket. Returns nil when admitted, else {'quota', unfinished now},
-- {'storage', bytes, ms until some of them expire} or {'rate', ms until a token is
-- back}. Redis' clock, so every web process agrees.
-- keys: the token bucket (a hash: tokens, ts), the tenant's pending and waiting
-- status indexes, its storage usage; args: tokens added per second, the bucket's
-- size (the burst), jobs in this submission, most unfinished jobs, most bytes.
local function admission_refused(bucket, pending, waiting, usage, rate, burst, jobs, most,
                                 max_bytes)
  rate, burst, jobs, most = tonumber(rate), tonumber(burst), tonumber(jobs), tonumber(most)
  local unfinished = redis.call('ZCARD', pending) + redis.call('ZCARD', waiting)
  if unfinished + jobs > most then return {'quota', unfinished} end
  local now = now_ms()
  local stored, frees_at = storage_used(usage)
  if stored >= tonumber(max_bytes) then return {'storage', stored, frees_at - now} end
  local f = redis.call('HMGET', bucket, 'tokens', 'ts')
  local tokens = math.min(burst, (tonumber(f[1]) or burst) + (now - (tonumber(f[2]) or now)) * rate / 1000)
  local taken = tokens >= 1
  if taken then tokens = tokens - 1 end
  redis.call('HSET', bucket, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  if taken then return nil end
  return {'rate', math.ceil((1 - tokens) * 1000 / rate)}
end
