"""caucase: a certificate authority for users and services."""

__version__ = "0.9.17"
