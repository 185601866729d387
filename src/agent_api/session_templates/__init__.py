"""Session templates: reusable, shareable session set-ups."""
