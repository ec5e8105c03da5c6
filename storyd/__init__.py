"""storyd: turn a story into a consistent comic, and its panels into transition videos."""

__version__ = "0.1.0"
