"""Leeward: development environments that stay reachable through the fleet's weather."""

__version__ = "0.1.0"
