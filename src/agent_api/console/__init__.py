"""The web console: static pages and modules served at `/`, talking to the API like any other client."""
