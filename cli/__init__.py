"""The ``affectline`` command line: a thin face over ``services`` (shared with the dashboard) and, to run the workers' code in this process, ``tasks``, ``pipeline`` and ``clinic``."""
