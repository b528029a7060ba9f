"""Webhooks: which events go where (`store`), the courier that delivers them, their
signatures (Standard Webhooks), and the egress rules of where a webhook may lead.
"""
