"""The ``affectline`` command line: a thin face over ``services`` (shared with the dashboard) and ``ingest``."""
