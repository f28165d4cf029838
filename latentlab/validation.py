"""Input validation shared by every public entry point.

Each helper names the argument, what was expected, what came, and how to fix
it, and raises :class:`ValueError` (never a bare assert, never an error from
deep inside torch).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch


def fail(argument: str, problem: str, fix: str) -> None:
    """Raise ``ValueError("argument: problem. Fix: fix")``."""
    raise ValueError(f"{argument}: {problem}. Fix: {fix}")


def as_tensor(value, argument: str, dtype=None, device=None) -> torch.Tensor:
    """Convert arrays, lists or tensors to a floating torch tensor.

    Integer input becomes the default float dtype; an existing floating
    tensor keeps its dtype unless ``dtype`` is given.
    """
    try:
        if isinstance(value, torch.Tensor):
            t = value
        else:
            t = torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        fail(argument, f"could not be read as a numeric array ({err})", "pass a numpy array or torch tensor of numbers")
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8, torch.bool)):
        fail(argument, f"has dtype {t.dtype}", "pass real floating-point numbers")
    if dtype is None and not t.is_floating_point():
        dtype = torch.get_default_dtype()
    return t.to(dtype=dtype if dtype is not None else t.dtype, device=device if device is not None else t.device)


def check_finite(t: torch.Tensor, argument: str, frame_axis: int | None = 0) -> None:
    """Refuse NaN or infinite entries, naming the first offending frames."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        if frame_axis is not None and t.dim() > 0:
            other = [d for d in range(t.dim()) if d != frame_axis]
            frames = torch.nonzero(bad.any(dim=tuple(other)) if other else bad).flatten().tolist()
            shown = ", ".join(str(i) for i in frames[:10]) + (" ..." if len(frames) > 10 else "")
            fail(argument, f"has NaN or infinite values in {len(frames)} frame(s) (frame indices {shown})",
                 "remove or repair those frames before passing them (e.g. positions[mask])")
        fail(argument, "has NaN or infinite values", "pass finite numbers")


def check_positions(x, argument: str = "positions", n_atoms: int | None = None, dtype=None, device=None) -> torch.Tensor:
    """Validate positions of shape ``(n_frames, n_atoms, 3)`` in nm and return them as a tensor.

    A single frame ``(n_atoms, 3)`` is refused with a hint to add the frame axis.
    """
    t = as_tensor(x, argument, dtype=dtype, device=device)
    if t.dim() == 2 and t.shape[-1] == 3:
        fail(argument, f"has shape {tuple(t.shape)}, a single frame",
             "add a frame axis: positions[None] gives shape (1, n_atoms, 3)")
    if t.dim() != 3 or t.shape[-1] != 3:
        fail(argument, f"has shape {tuple(t.shape)}, expected (n_frames, n_atoms, 3)",
             "reshape to (n_frames, n_atoms, 3) with coordinates in nm")
    if t.shape[0] == 0:
        fail(argument, "has no frames", "pass at least one frame")
    if n_atoms is not None and t.shape[1] != n_atoms:
        fail(argument, f"has {t.shape[1]} atoms, expected {n_atoms} (the system the map/masses were made for)",
             "pass positions of the whole system, in topology order")
    check_finite(t, argument)
    return t


def check_masses(masses, n_atoms: int, argument: str = "masses", dtype=None, device=None) -> torch.Tensor:
    """Validate constant atomic masses of shape ``(n_atoms,)`` in amu."""
    t = as_tensor(masses, argument, dtype=dtype, device=device)
    if t.dim() != 1:
        fail(argument, f"has shape {tuple(t.shape)}, expected ({n_atoms},)", "pass one mass per atom in amu")
    if t.shape[0] != n_atoms:
        fail(argument, f"has {t.shape[0]} entries but the system has {n_atoms} atoms",
             "pass one mass per atom, in topology order (amu)")
    check_finite(t, argument, frame_axis=None)
    if bool((t <= 0).any()):
        idx = torch.nonzero(t <= 0).flatten().tolist()[:10]
        fail(argument, f"has non-positive entries at atoms {idx}",
             "masses must be > 0 amu (virtual sites cannot be mapped; drop them)")
    return t


def _check_scalar(value, argument: str, unit: str, allow_zero: bool) -> float:
    bound = ">= 0" if allow_zero else "> 0"
    hint = f"pass a number {bound}{(' in ' + unit) if unit else ''}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        fail(argument, f"got {value!r}, expected a number", hint)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        fail(argument, f"got {value!r}, expected a finite number {bound}", hint)
    return v


def check_positive(value, argument: str, unit: str = "") -> float:
    """Validate a finite scalar > 0 and return it as float."""
    return _check_scalar(value, argument, unit, allow_zero=False)


def check_nonnegative(value, argument: str, unit: str = "") -> float:
    """Validate a finite scalar >= 0 and return it as float."""
    return _check_scalar(value, argument, unit, allow_zero=True)


def check_atom_indices(indices: Sequence[int], n_atoms: int | None, argument: str = "atoms") -> list[int]:
    """Validate 0-based atom indices against the number of atoms (if known)."""
    out = [int(i) for i in indices]
    if len(out) == 0:
        fail(argument, "selects no atoms", "check the selection string or index list")
    neg = [i for i in out if i < 0]
    if neg:
        fail(argument, f"has negative indices {neg[:5]}", "atom indices are 0-based and >= 0")
    if n_atoms is not None:
        over = [i for i in out if i >= n_atoms]
        if over:
            fail(argument, f"has indices {over[:5]} out of range for a system of {n_atoms} atoms (valid 0..{n_atoms - 1})",
                 "atom indices are 0-based; check the selection")
    return out
