"""CLI commands: send."""
