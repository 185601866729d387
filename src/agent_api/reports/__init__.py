"""Reports of task executions and sessions: HTML, PDF and JSON."""
