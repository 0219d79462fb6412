"""The analysis of a video, in memory: decode -> follow faces -> face step -> windows -> bins -> chunk
result -> link. One module a stage: ``video`` and ``decode`` (frames, each at its own timestamp, from one
``open_video``), ``faces`` (landmarks, expressions, the readability gate), ``windows`` (CLIP-CAER),
``bins``, ``chunk`` (what a worker stores for one window), ``link`` (chunks stitched into persons),
``relative`` (cues read against the person's baseline), and ``analyse`` (``Pipeline``: the loaded
models, and ``analyse_chunk(video, window, shape)`` with the job's shape passed in).

Imports ``affectline`` and ``recognition`` only: it knows no database, no queue and no person of the
roster (``identity``), so the same code runs in a worker, in ``affectline analyze --eager`` and in a bench."""
