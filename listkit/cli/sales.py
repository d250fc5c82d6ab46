"""CLI commands: sales."""
