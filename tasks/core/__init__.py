"""What every room shares: the clock, statuses, Redis key names, settings, events,
metrics, the one error hierarchy, and the Lua script loader with its prelude (`lua/`).

Nothing here imports another room: core is the floor the house stands on.
"""
