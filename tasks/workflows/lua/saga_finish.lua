-- Every completed step was compensated: the workflow ends compensated.
-- KEYS[1] workflow hash
-- ARGV[1] lease token, ARGV[2] now (ISO), ARGV[3] retention (s)
-- Returns 'ok', 'lost', or 'unfinished' when a step still holds work to undo
local wf = KEYS[1]
if redis.call('HGET', wf, 'saga_token') ~= ARGV[1] then return 'lost' end
local _, left, count = step_census(wf)
if #left > 0 then return 'unfinished' end
end_saga(wf)
finish(wf, 'compensated', ARGV[2], ARGV[3])
emit_workflow(EV.WORKFLOW_COMPENSATED, wf, ARGV[2], {compensated_steps = count})
return 'ok'
