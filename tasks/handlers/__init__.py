"""Job handlers: one per job type, from a registry that plugins extend."""
