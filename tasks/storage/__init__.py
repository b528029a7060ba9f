"""What Chordline keeps for tenants and operators: artifacts (images), quotas,
idempotency records, the audit log, and the retention sweeps that end them.
"""
