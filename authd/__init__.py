"""authd: a two-factor authentication server (RADIUS and HTTP front-ends)."""

__version__ = "0.1.0"
