"""Orchestration: the analysis pipeline, Celery tasks and the ``affectline`` CLI."""
