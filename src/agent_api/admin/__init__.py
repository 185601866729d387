"""Admin-only views and user management."""
