"""CLI commands: lists."""
