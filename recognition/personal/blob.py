"""Model state as bytes for the database: compressed npz with a JSON header, no pickle."""

from __future__ import annotations

import io
import json

import numpy as np


def pack(meta: dict, **arrays: np.ndarray) -> bytes:
    """``meta`` must carry a "format" tag; ``unpack`` refuses blobs of any other format."""
    buf = io.BytesIO()
    np.savez_compressed(buf, meta=np.array(json.dumps(meta)), **arrays)
    return buf.getvalue()


def unpack(data: bytes, fmt: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of a blob written by ``pack``; a clear error names ``what`` on a format mismatch."""
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != fmt:
            raise ValueError(f"{what} blob has format {meta.get('format')!r}, expected {fmt!r}")
        return meta, {k: z[k] for k in z.files if k != "meta"}
