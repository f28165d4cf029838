"""Frames read from an HDF5 file on demand: data sets larger than memory.

:class:`FrameArray` stands in for a ``(n_frames, n_atoms, 3)`` NumPy array of a latentlab data set opened
with ``load(path, lazy=True)``: indexing it along the frame axis reads just those frames (contiguous
slices in one read; index arrays sorted and read once each), ``len``/``shape``/``dtype`` answer without
reading, and ``np.asarray`` reads everything (what a small data set wants anyway).  Selecting frames
(:meth:`FrameArray.take`) gives another lazy view.  Everything that streams a data set (mapping frames,
force-matching targets) reads it in blocks of :data:`BLOCK_FRAMES` frames, so memory is bounded by the
block size, not the file.
"""

from __future__ import annotations

import numpy as np

#: Frames per block when a data set is streamed (about 24 MB for 100 atoms in float32).
BLOCK_FRAMES = 20000


class FrameArray:
    """A lazy view of an HDF5 dataset of frames, optionally restricted to ``index`` (sorted or not).

    Parameters
    ----------
    dataset : h5py.Dataset, shape=(n_frames, ...)
    index : np.ndarray of int, optional
        The frames of the view, in its order (default: all frames).
    """

    def __init__(self, dataset, index=None, owner=None):
        self._data = dataset
        self._owner = owner  # keeps the h5py.File open as long as a view exists
        self._index = None if index is None else np.asarray(index, dtype=np.int64)

    @property
    def shape(self) -> tuple:
        n = self._data.shape[0] if self._index is None else len(self._index)
        return (n,) + tuple(self._data.shape[1:])

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"FrameArray(shape={self.shape}, dtype={self.dtype}, file={self._data.file.filename!r})"

    def _read(self, frames: np.ndarray) -> np.ndarray:
        """Read the given base-dataset frames (any order, repeats allowed)."""
        if len(frames) == 0:
            return np.zeros((0,) + tuple(self._data.shape[1:]), dtype=self._data.dtype)
        lo, hi = int(frames.min()), int(frames.max()) + 1
        if hi - lo <= 2 * len(frames):  # dense enough: one contiguous read
            return self._data[lo:hi][frames - lo]
        # scattered (e.g. every 50th frame): contiguous blocks in file order, each read once and picked from;
        # sequential reads of a compressed file beat point selections
        unique, inverse = np.unique(frames, return_inverse=True)
        parts = []
        for start in range(lo, hi, BLOCK_FRAMES):
            wanted = unique[(unique >= start) & (unique < start + BLOCK_FRAMES)]
            if len(wanted):
                parts.append(self._data[int(wanted[0]):int(wanted[-1]) + 1][wanted - wanted[0]])
        return np.concatenate(parts)[inverse]

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self[key[0]][(slice(None),) + key[1:]]
        if isinstance(key, (int, np.integer)):
            return self[np.asarray([key])][0]
        if isinstance(key, slice) and self._index is None:
            start, stop, step = key.indices(self._data.shape[0])
            if step == 1:
                return self._data[start:stop]
        positions = np.arange(len(self))[key]
        frames = positions if self._index is None else self._index[positions]
        return self._read(np.asarray(frames, dtype=np.int64))

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def take(self, frames) -> "FrameArray":
        """A lazy view of the given frames (index array, slice or boolean mask of this view)."""
        positions = np.arange(len(self))[frames]
        index = positions if self._index is None else self._index[positions]
        return FrameArray(self._data, index, self._owner)


def is_lazy(array) -> bool:
    return isinstance(array, FrameArray)
