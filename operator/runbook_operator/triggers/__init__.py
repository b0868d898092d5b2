"""What starts executions besides a person or GitOps: Alertmanager's webhook (schedules later)."""
