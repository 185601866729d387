"""Tasks: prompt templates run on demand or on a cron schedule."""
