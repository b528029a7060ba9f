"""A job's life: submission (`service.JobService`), the job store, the broker message,
dispatch, claim, lease and lifecycle transitions, and the `chordline.run_job` runner.

Each transition is one Lua script in `lua/`, beside the module that calls it.
"""
