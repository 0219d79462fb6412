"""Reader for dlib's binary serialization format (``dlib/serialize.h``), numpy only.

What the model files use:

- integers: one control byte (low nibble = number of value bytes, bit 7 = negative),
  then the magnitude in that many little-endian bytes;
- ``bool``: the character ``'1'`` or ``'0'``;
- ``float``/``double``: an int64 mantissa and an int16 exponent, each an integer as
  above (value = mantissa * 2**exponent; exponents 32000-32002 mean +inf, -inf, NaN);
- strings: an integer length, then the bytes;
- ``std::vector``: an integer length, then the elements;
- ``matrix``: rows and columns (written negated by current dlib), then the elements
  row by row as floats;
- dnn ``tensor``: version (1: floats as above, 2: raw little-endian float32), then
  num_samples, k, nr, nc.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np


class DlibFormatError(ValueError):
    """The bytes are not what the model's dlib layout says they should be."""


class DlibReader:
    """Sequential reader over the bytes of one dlib-serialized file."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data, self.pos, self.name = memoryview(data), 0, name

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos}")

    def _take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise self.fail(f"file ends, wanted {n} more bytes")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self._take(1)[0]
        size, neg = ctrl & 0x0F, ctrl & 0x80
        if size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte {ctrl:#x}")
        v = int.from_bytes(self._take(size), "little") if size else 0
        return -v if neg else v

    def bool(self) -> bool:
        ch = bytes(self._take(1))
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool {ch!r}")
        return ch == b"1"

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            return {32000: math.inf, 32001: -math.inf}.get(exponent, math.nan)
        return math.ldexp(mantissa, exponent)

    def floats(self, n: int) -> np.ndarray:
        """``n`` dlib-encoded floats, decoded in a tight loop (the shape predictor holds ~1M)."""
        out = np.empty(n, np.float64)
        data, pos = self.data, self.pos
        try:
            for i in range(n):
                vals = []
                for _ in range(2):  # mantissa then exponent
                    ctrl = data[pos]
                    size = ctrl & 0x0F
                    v = int.from_bytes(data[pos + 1 : pos + 1 + size], "little")
                    vals.append(-v if ctrl & 0x80 else v)
                    pos += 1 + size
                m, e = vals
                out[i] = math.ldexp(m, e) if e < 32000 else {32000: math.inf, 32001: -math.inf}.get(e, math.nan)
        except (IndexError, OverflowError):
            pos = len(data) + 1
        if pos > len(data):
            raise self.fail("file ends (or is not dlib's) inside a float array")
        self.pos = pos
        return out

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1 << 20:
            raise self.fail(f"bad string length {n}")
        return bytes(self._take(n)).decode("latin-1")

    def expect_string(self, *allowed: str) -> str:
        s = self.string()
        if s not in allowed:
            raise self.fail(f"expected {' or '.join(allowed)}, found {s!r}")
        return s

    def expect_int(self, *allowed: int, what: str = "version") -> int:
        v = self.int()
        if v not in allowed:
            raise self.fail(f"unexpected {what} {v} (known: {allowed})")
        return v

    def matrix(self) -> np.ndarray:
        """A float ``dlib::matrix`` as a 2-D array (a column vector is (n, 1))."""
        nr, nc = abs(self.int()), abs(self.int())
        return self.floats(nr * nc).reshape(nr, nc)

    def tensor(self) -> np.ndarray:
        """A dnn tensor as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.expect_int(1, 2)
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        if version == 2:
            arr = np.frombuffer(self._take(4 * n), dtype="<f4").astype(np.float32)
        else:
            arr = self.floats(n).astype(np.float32)
        return arr.reshape(shape)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        """The shape a layer views its parameter tensor through."""
        self.expect_int(1)
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def at_end(self) -> bool:
        return self.pos == len(self.data)


def file_sha256(path: Path) -> str:
    """The file's sha256 (hex): the key its converted weights are cached under."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
