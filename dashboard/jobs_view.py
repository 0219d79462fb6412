"""One analysis job's live progress as Streamlit elements: the job's bar, then a bar per chunk of a long video.

Shared by the Sessions page (every active job) and the session page (its own job), so both show the parts."""

from __future__ import annotations

import streamlit as st

from dashboard.safe import md_text
from services import summaries
from services.progress import JobProgress

CHUNK_WORDS = {"queued": "waiting", "done": "done", "failed": "failed, retrying"}


def chunk_text(c) -> str:
    """``part 2 · 10:00-20:00 · 40%`` (and the try number once a part was retried)."""
    span = f"{summaries.format_clock(c.t_start)}-{summaries.format_clock(c.t_end)}"
    retry = f", try {c.attempts}" if c.attempts > 1 else ""
    word = f"{c.progress:.0%}" if c.status == "running" else CHUNK_WORDS.get(c.status, c.status)
    return f"part {c.idx + 1} · {span} · {word}{retry}"


def show_job(job: JobProgress, title: str | None = None) -> None:
    """The job's bar (``title``: what to call it, default its session's title and id) and its chunks' bars."""
    head = md_text(title) if title is not None else f"**{md_text(job.title)}** (#{job.session_id}): "
    st.progress(job.progress, text=f"{head}{md_text(job.phrase())}")
    if job.chunks:  # a long video is analysed in parts, maybe by several workers at once
        cols = st.columns(min(len(job.chunks), 6))
        for i, c in enumerate(job.chunks):
            cols[i % len(cols)].progress(1.0 if c.status == "done" else c.progress, text=chunk_text(c))
