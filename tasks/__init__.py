"""Orchestration: the analysis pipeline (``ingest.pipeline``, ``ingest/stages``), the chunked Celery
tasks and their leases (``tasks``, ``jobs``, ``chunks``), a job run in this process (``eager``), the
clinicians' re-scoring (``clinic``) and retention tasks. The CLI is ``cli/``."""
