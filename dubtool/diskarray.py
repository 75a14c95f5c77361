"""Arrays too long to hold: a (T, ...) array in an unlinked temporary file, read and written by ranges
of its first axis (os.pread / os.pwrite), so an hour of landmarks or samples is never resident.

Not a memory map on purpose: the pages of a mapped file count in the process's resident size once
touched, so walking an hour through np.memmap grows the RSS as much as holding the array.
"""

from __future__ import annotations

import math
import os
import tempfile
import weakref

import numpy as np


class DiskArray:
    """A (T, ...) array of a fixed dtype in a temporary file (deleted when closed or collected).

    Reads: `a[i]`, `a[i:j(:k)]`, `a[int array]`, `a[bool mask]`, `a[key, ...rest]` (the first axis read
    from disk, the rest applied to the read rows) and np.asarray(a) (the whole array: the fallback for
    code that needs it at once). Writes: `a[i] = v`, `a[i:j] = v` (step 1). `length` rows from row
    `offset` of the file are this array's (a view shares the file)."""

    def __init__(self, shape: tuple[int, ...], dtype=np.float32, file=None, offset: int = 0,
                 prefix: str = "dubtool-") -> None:
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self._row = self.dtype.itemsize * math.prod(self.shape[1:])
        self._file = file if file is not None else tempfile.TemporaryFile(prefix=prefix)
        self._offset = int(offset)
        self._owner = None  # a view keeps the array that owns the file alive
        self._closer = weakref.finalize(self, self._file.close)  # closed (deleted) when collected

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        """Delete the file now (views of it become unreadable)."""
        self._file.close()

    # -- ranges of rows

    def read(self, a: int, b: int) -> np.ndarray:
        """Rows a..b-1 (clipped to the array) as a new writable array."""
        a, b = max(0, int(a)), min(self.shape[0], int(b))
        n = max(0, b - a)
        out = np.zeros((n,) + self.shape[1:], self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, done = (self._offset + a) * self._row, 0
        while done < len(view):  # Linux moves at most ~2 GB per call; rows never written read as zeros
            got = os.preadv(self._file.fileno(), [view[done:]], pos + done)
            if got == 0:
                break
            done += got
        return out

    def write(self, a: int, values) -> None:
        """Rows a.. set to `values` (rows of this array's row shape, cast to its dtype as numpy
        assignment casts)."""
        v = np.ascontiguousarray(np.asarray(values).astype(self.dtype, copy=False))
        if v.shape[1:] != self.shape[1:]:
            raise ValueError(f"rows of shape {v.shape[1:]} written into an array of rows {self.shape[1:]}")
        if a < 0 or a + len(v) > self.shape[0]:
            raise IndexError(f"rows {a}..{a + len(v)} outside 0..{self.shape[0]}")
        data = memoryview(v.reshape(-1).view(np.uint8))
        pos, done = (self._offset + a) * self._row, 0
        while done < len(data):
            done += os.pwrite(self._file.fileno(), data[done:], pos + done)

    def view(self, a: int, b: int) -> "DiskArray":
        """Rows a..b-1 as a DiskArray on the same file (nothing read)."""
        a, b = max(0, min(self.shape[0], int(a))), max(0, min(self.shape[0], int(b)))
        return type(self)._from_file(self, max(0, b - a), self._offset + a)

    @classmethod
    def _from_file(cls, other: "DiskArray", length: int, offset: int) -> "DiskArray":
        out = cls.__new__(cls)
        out.dtype, out.shape = other.dtype, (length,) + other.shape[1:]
        out._row, out._file, out._offset = other._row, other._file, offset
        out._owner = other if other._owner is None else other._owner
        out._closer = None
        return out

    # -- numpy-like indexing on the first axis

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            return self._rows(key)
        first, rest = (key[0], key[1:]) if key else (slice(None), ())
        rows = self._rows(first)
        if not rest:
            return rows
        if isinstance(first, (int, np.integer)):
            return rows[rest]
        return rows[(slice(None),) * max(1, np.ndim(first)) + rest]

    def _rows(self, key):
        n = self.shape[0]
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step < 0:
                lo = b + 1
                return self.read(lo, a + 1)[::-1][::-step] if a >= lo else self.read(0, 0)
            return self.read(a, b)[::step]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {key} out of range for {n} rows")
            return self.read(i, i + 1)[0]
        idx = np.asarray(key)
        if idx.dtype == bool:
            return self.read(0, n)[idx]
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size == 0:
            return np.zeros(idx.shape + self.shape[1:], self.dtype)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if lo < 0 or hi > n:
            raise IndexError(f"index out of range for {n} rows")
        return self.read(lo, hi)[idx - lo]

    def __setitem__(self, key, values) -> None:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {key} out of range for {n} rows")
            self.write(i, np.broadcast_to(np.asarray(values), self.shape[1:])[None])
            return
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step == 1:
                self.write(a, np.broadcast_to(np.asarray(values), (max(0, b - a),) + self.shape[1:]))
                return
        raise TypeError("DiskArray assignment takes an index or a slice of step 1")

    def __array__(self, dtype=None, copy=None):
        x = self.read(0, self.shape[0])
        return x if dtype is None else x.astype(dtype, copy=False)


def frames_array(shape: tuple[int, ...], dtype, on_disk: bool, prefix: str = "dubtool-"):
    """A zeroed (T, ...) array: in memory, or a DiskArray when `on_disk`."""
    return DiskArray(shape, dtype, prefix=prefix) if on_disk else np.zeros(shape, dtype)
