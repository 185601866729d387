"""Webhooks: endpoints that hear of turns, permission requests, status changes, task executions and budgets."""
