"""Persistence: SQLAlchemy models, migrations and plain query functions.

Knows nothing of recognition or the dashboard; arrays are stored as float32 blobs.
"""
