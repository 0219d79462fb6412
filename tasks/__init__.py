"""The workers' side: a lazily built Celery app (``app``: ``celery -A tasks.app worker``), and every job
it runs, each leased and reaped: an analysis's plan, chunks and link (``analysis``, ``chunks``), the
analysis stored with its persons (``store``), the clinicians' personalise and re-score jobs (``clinic``),
retention (``retention``), the review copy made from the decoded frames (``review_copy``), a job run in
this process (``eager``, for ``affectline analyze --eager`` and tests).

The top of the house below the front ends: it may import ``pipeline``, ``identity``, ``clinic``,
``recognition`` and ``storage``; nothing but the CLI (which runs it in-process) imports it, and the
front ends reach it only by task name (``affectline.task_names``)."""
