-- Admit one submission (a workflow's steps) for a tenant, in one step: see
-- `admission_refused` in tasks/core/lua/prelude/5_quotas.lua, whose keys and arguments these are.
-- KEYS[1] the token bucket, KEYS[2] and KEYS[3] the tenant's pending and waiting
-- status indexes, KEYS[4] its storage usage
-- ARGV[1] tokens added per second, ARGV[2] the bucket's size (the burst),
-- ARGV[3] jobs in this submission, ARGV[4] most unfinished jobs, ARGV[5] most bytes
-- Returns {'ok'} or the refusal.
return admission_refused(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3],
  ARGV[4], ARGV[5]) or {'ok'}
