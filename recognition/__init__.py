"""Models that see faces: detection, tracking, re-identification, expressions, academic emotion.

Knows nothing of storage or the dashboard; takes frames and returns typed values.
"""
