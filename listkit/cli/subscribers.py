"""CLI commands: subscribers."""
