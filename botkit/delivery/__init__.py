"""Delivery: the reply policy, the outbox sender and status handling."""
