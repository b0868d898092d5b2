"""Notifications of executions' events to Slack, PagerDuty and webhooks."""
