"""Affectline bottom layer: shared types, settings and the queue contract.

Imports nothing else of ours, so every other package can depend on it.
"""

__version__ = "0.1.0"
