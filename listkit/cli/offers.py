"""CLI commands: offers."""
