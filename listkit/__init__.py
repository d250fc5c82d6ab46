"""listkit: send sales offers to email lists and see which lists make money."""

__version__ = "0.1.0"
