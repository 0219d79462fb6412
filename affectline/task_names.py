"""The Celery tasks' names: the contract between whoever enqueues (services, by name) and the workers.

Plain strings, importable without Celery (storage filters jobs by them)."""

ANALYZE_TASK = "affectline.analyze_session"  # plan: a job becomes chunk tasks
CHUNK_TASK = "affectline.analyze_chunk"  # one chunk of a job, on any worker
LINK_TASK = "affectline.link_job"  # stitch the chunks, store the timelines, queue the re-scoring
PERSONALIZE_TASK = "affectline.personalize"
RESCORE_TASK = "affectline.rescore_person"  # a person's bins, or (no person) every person of a session
RETENTION_TASK = "affectline.retention_expire"  # delete expired sessions (beat schedule in affectline.queue)
REPORTS_TASK = "affectline.group_reports"  # scheduled group reports (beat, when Settings.group_reports_every is set)
CLINIC_TASKS = (PERSONALIZE_TASK, RESCORE_TASK)  # one-phase jobs: leased whole, reaped like the rest
