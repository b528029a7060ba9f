"""The GPU fleet: what a slot offers and a job needs (`offers`), the node's profile,
the model catalog and warm cache, diffusers pipelines, placement, route queues, machines
and the messages each worker holds (`reservations`).
"""
