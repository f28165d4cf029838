"""Which frames train, validate and score a model: contiguous time blocks, never across a replica boundary.

Frames of MD data are correlated in time, so a random split leaks: neighbouring frames end up on both
sides.  Here every split is made of contiguous blocks of each independent trajectory (replica):

* ``holdout`` — the last fraction of every trajectory, kept out of training, validation and refit; it
  is only for scoring the finished model (``latentlab compare --against holdout``);
* ``validation`` — whole time blocks (of the rest) chosen at random by the seed, for early stopping;
* ``train`` — everything else.

A model records its split as frame ranges (:meth:`FrameSplit.record`), so the frames it never saw can
be found again from the data set alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latentlab.validation import fail


def _ranges(mask: np.ndarray) -> list[list[int]]:
    """``[[start, stop), ...]`` of the runs of True in ``mask``."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]


def ranges_to_indices(ranges) -> np.ndarray:
    """Frame indices of ``[[start, stop), ...]`` ranges."""
    return np.concatenate([np.arange(a, b) for a, b in ranges]).astype(int) if ranges else np.zeros(0, dtype=int)


@dataclass
class FrameSplit:
    """Frame indices (into the data set) of the training, validation and hold-out frames, each ``(n,)`` long."""

    n_frames: int
    train: torch.Tensor
    validation: torch.Tensor
    holdout: torch.Tensor

    @property
    def fit(self) -> torch.Tensor:
        """Frames a refit may use: training and validation (never the hold-out)."""
        return torch.sort(torch.cat([self.train, self.validation])).values

    def record(self) -> dict:
        """JSON-ready frame ranges for the model's training record."""
        def mask(idx):
            m = np.zeros(self.n_frames, dtype=bool)
            m[idx.cpu().numpy()] = True
            return m

        return {"n_frames": self.n_frames, "train": _ranges(mask(self.train)),
                "validation": _ranges(mask(self.validation)), "holdout": _ranges(mask(self.holdout))}


def trajectory_bounds(n_frames: int, slices=None) -> list[tuple[int, int]]:
    """``(start, stop)`` of each independent trajectory (one covering everything when ``slices`` is None)."""
    if slices is None:
        return [(0, int(n_frames))]
    return [(int(s.start), int(s.stop)) for s in slices]


def split_frames(n_frames: int, val_fraction: float, n_blocks: int, seed: int, holdout: float = 0.0,
                 slices=None) -> FrameSplit:
    """Training, validation and hold-out frames (see the module docstring).

    Parameters
    ----------
    n_frames : int
    val_fraction : float
        Fraction of the time blocks (of the frames not held out) used for validation, in (0, 1).
    n_blocks : int
        Number of time blocks over all trajectories (each trajectory gets a share proportional to its length).
    seed : int
        Chooses the validation blocks.
    holdout : float
        Fraction of every trajectory, taken from its end, never trained or validated on, in [0, 1).
    slices : list of slice, optional
        One slice per independent trajectory (:meth:`latentlab.data.Dataset.trajectory_slices`).
    """
    if not 0.0 < float(val_fraction) < 1.0:
        fail("val_fraction", f"got {val_fraction}", "use a fraction in (0, 1), e.g. 0.1")
    if not 0.0 <= float(holdout) < 1.0:
        fail("holdout", f"got {holdout}", "use a fraction in [0, 1), e.g. 0.2 (the last 20 % of each trajectory)")
    bounds = trajectory_bounds(n_frames, slices)
    held = np.zeros(n_frames, dtype=bool)
    for a, b in bounds:
        keep = b - a - int(round(float(holdout) * (b - a)))
        if keep < 2:
            fail("holdout", f"leaves {keep} frame(s) of a trajectory of {b - a} to train on", "hold out a smaller fraction")
        held[a + keep:b] = True
    usable = [(a, a + int(np.sum(~held[a:b]))) for a, b in bounds]
    total = sum(b - a for a, b in usable)
    n_blocks = max(2, min(int(n_blocks), total))
    # Blocks per trajectory in proportion to its length (at least one each); block ids are global.
    share = [max(1, round(n_blocks * (b - a) / total)) for a, b in usable]
    block = np.full(n_frames, -1)
    offset = 0
    for (a, b), k in zip(usable, share):
        block[a:b] = offset + np.arange(b - a) * k // (b - a)
        offset += k
    n_val = min(offset - 1, max(1, round(float(val_fraction) * offset)))
    gen = torch.Generator().manual_seed(int(seed))
    val_blocks = torch.randperm(offset, generator=gen)[:n_val].numpy()
    is_val = np.isin(block, val_blocks) & ~held
    is_train = ~is_val & ~held
    as_t = lambda m: torch.as_tensor(np.flatnonzero(m), dtype=torch.long)  # noqa: E731
    return FrameSplit(int(n_frames), as_t(is_train), as_t(is_val), as_t(held))


def time_block_split(n_frames: int, val_fraction: float, n_blocks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and validation frame indices of one trajectory without hold-out (see :func:`split_frames`)."""
    s = split_frames(n_frames, val_fraction, n_blocks, seed)
    return s.train, s.validation
