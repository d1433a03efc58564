"""ncf: neural collaborative filtering for implicit feedback."""

__version__ = "0.1.0"
