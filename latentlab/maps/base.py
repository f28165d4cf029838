"""The one interface every CG map implements.

A CG map ``f`` takes batched positions ``(n_frames, n_atoms, 3)`` in nm to CG
coordinates ``Q`` of shape ``(n_frames, n_cg)``.  It reads only the atoms in
``map.atoms``; derivatives are taken with respect to those atoms alone (the
Jacobian with respect to every other atom is zero), which keeps ``J`` small
for big molecules.

Subclasses implement :meth:`CGMap.evaluate` on the read atoms, written with
batched torch operations so that ``torch.func.vmap`` and ``jacrev`` apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.func import jacfwd, jacrev, vmap

from latentlab.validation import check_atom_indices, check_positions, fail


@dataclass(frozen=True)
class Coordinate:
    """Metadata of one CG coordinate.

    Attributes
    ----------
    name : str
        Human-readable name, e.g. ``"r1"`` or ``"phi"``.
    unit : str
        ``"nm"``, ``"rad"`` or ``"1"`` (dimensionless).
    periodic : bool
        True for angles that wrap to (-pi, pi] (dihedrals).
    bounds : tuple of float or None
        Closed interval the coordinate cannot leave (e.g. ``(-1, 1)`` for a
        cosine, ``(0, pi)`` for a bond angle); the sampler reflects there.
    """

    name: str
    unit: str
    periodic: bool = False
    bounds: tuple[float, float] | None = None


class LatentCoordinates:
    """What a latent space is made of, read from a ``coordinates`` tuple of :class:`Coordinate` (maps and models)."""

    coordinates: tuple

    @property
    def n_cg(self) -> int:
        """Number of CG coordinates ``N``."""
        return len(self.coordinates)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.coordinates]

    @property
    def units(self) -> list[str]:
        return [c.unit for c in self.coordinates]

    @property
    def periodic(self) -> list[bool]:
        return [c.periodic for c in self.coordinates]

    @property
    def bounds(self) -> list[tuple[float, float] | None]:
        return [c.bounds for c in self.coordinates]


class CGMap(LatentCoordinates):
    """Base class of CG maps ``Q = f(q)``.

    Parameters
    ----------
    atoms : sequence of int
        0-based indices of the atoms the map reads, in the order the map uses them.
    coordinates : sequence of Coordinate
        One entry per output coordinate (length ``n_cg``).
    n_atoms : int, optional
        Number of atoms of the whole system, used to validate inputs.
    spec : str, optional
        The spec string the map was built from (see :func:`latentlab.maps.parse_map`).
    """

    #: True when f is linear in q (then J is constant and div B = 0).
    is_linear: bool = False
    #: Spec kind (``triangle``, ``distances``, ...; see :mod:`latentlab.maps.spec`).
    kind: str = "custom"
    #: What the map computes, in one line (shown by the dashboard next to its outputs).
    formula: str = ""

    def __init__(self, atoms: Sequence[int], coordinates: Sequence[Coordinate], n_atoms: int | None = None,
                 spec: str | None = None):
        self.atoms = tuple(check_atom_indices(atoms, n_atoms, "atoms"))
        self.coordinates = tuple(coordinates)
        if len(self.coordinates) == 0:
            fail("coordinates", "the map has no output coordinates", "give at least one output")
        self.n_atoms = n_atoms
        self.spec = spec

    def describe(self) -> str:
        """One line per coordinate: name, unit, periodic/bounded."""
        lines = []
        for c in self.coordinates:
            extra = " periodic (-pi, pi]" if c.periodic else (f" bounded [{c.bounds[0]:g}, {c.bounds[1]:g}]" if c.bounds else "")
            lines.append(f"{c.name} [{c.unit}]{extra}")
        return "\n".join(lines)

    def to_dict(self) -> dict | None:
        """Everything needed to rebuild this exact map (plain values and tensors), or None if it cannot be stored.

        Model files keep it, so a map fitted to data (PCA) is the same map when the model is loaded.
        """
        return None

    def __repr__(self) -> str:
        spec = f" spec={self.spec!r}" if self.spec else ""
        return f"<{type(self).__name__}{spec} n_cg={self.n_cg} atoms={len(self.atoms)}>"

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, xs: torch.Tensor) -> torch.Tensor:
        """Map positions of the read atoms ``xs (n_frames, n_read, 3)`` nm to ``Q (n_frames, n_cg)``.

        Implemented by subclasses with batched torch operations only.
        """
        raise NotImplementedError

    def select(self, positions: torch.Tensor) -> torch.Tensor:
        """Validate ``positions (n_frames, n_atoms, 3)`` and return the read atoms ``(n_frames, n_read, 3)``."""
        x = check_positions(positions, "positions", n_atoms=self.n_atoms)
        if self.n_atoms is None and max(self.atoms) >= x.shape[1]:
            fail("positions", f"has {x.shape[1]} atoms but the map reads atom index {max(self.atoms)}",
                 "pass positions of the whole system the map was built for")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        return x[:, list(self.atoms), :]

    def validate_geometry(self, xs: torch.Tensor) -> None:
        """Refuse configurations where the map is undefined (subclasses override)."""

    def __call__(self, positions) -> torch.Tensor:
        """``Q = f(positions)``: ``(n_frames, n_atoms, 3)`` nm -> ``(n_frames, n_cg)``."""
        xs = self.select(positions)
        self.validate_geometry(xs)
        return self.evaluate(xs)

    def map_frames(self, positions, chunk: int = 20000) -> torch.Tensor:
        """``Q`` of many frames without gradients, ``chunk`` frames at a time to bound memory.

        ``positions``: array or tensor ``(n_frames, n_atoms, 3)`` nm; returns ``(n_frames, n_cg)`` float64.
        """
        if len(positions) == 0:
            return torch.zeros(0, self.n_cg, dtype=torch.float64)
        with torch.no_grad():
            return torch.cat([self(torch.as_tensor(positions[s:s + chunk], dtype=torch.float64))
                              for s in range(0, len(positions), int(chunk))])

    # ------------------------------------------------------------------ derivatives
    def _single(self, xs: torch.Tensor) -> torch.Tensor:
        return self.evaluate(xs[None])[0]

    def flat_jacobian_fn(self):
        """Per-frame function ``xs_flat (3 n_read,) -> J (n_cg, 3 n_read)``, for use under vmap.

        Forward mode costs one pass per input, reverse mode one per output;
        the cheaper one is chosen from the shapes (both are exact).
        """
        def f_flat(xf):
            return self._single(xf.reshape(-1, 3))

        n_in = 3 * len(self.atoms)
        return jacfwd(f_flat) if n_in <= max(16, 3 * self.n_cg) else jacrev(f_flat)

    def jacobian_read(self, xs: torch.Tensor) -> torch.Tensor:
        """Jacobian with respect to the read atoms.

        Parameters
        ----------
        xs : torch.Tensor, shape=(n_frames, n_read, 3), nm

        Returns
        -------
        torch.Tensor, shape=(n_frames, n_cg, n_read, 3)
            ``dQ_i / dx_{a,k}`` in units of Q per nm.
        """
        jac = vmap(self.flat_jacobian_fn())(xs.reshape(xs.shape[0], -1))  # (F, N, 3R)
        return jac.reshape(xs.shape[0], self.n_cg, -1, 3)

    def jacobian(self, positions) -> torch.Tensor:
        """Full Jacobian ``J = df/dq`` of shape ``(n_frames, n_cg, n_atoms, 3)`` (zero for unread atoms)."""
        x = check_positions(positions, "positions", n_atoms=self.n_atoms)
        xs = self.select(x)
        self.validate_geometry(xs)
        jr = self.jacobian_read(xs)  # (F, N, R, 3)
        full = jr.new_zeros(x.shape[0], self.n_cg, x.shape[1], 3)
        full.index_add_(2, torch.as_tensor(self.atoms, device=x.device), jr)
        return full

    # ------------------------------------------------------------------ closed forms
    def closed_form_effective_mass(self, Q: torch.Tensor, inverse_masses: torch.Tensor) -> torch.Tensor | None:
        """``A(Q) = J M^-1 J^T`` as a function of Q when the map knows it in closed form.

        Parameters
        ----------
        Q : torch.Tensor, shape=(n_frames, n_cg)
        inverse_masses : torch.Tensor, shape=(n_read,), 1/amu
            Inverse masses of the read atoms, in the order of ``self.atoms``.

        Returns
        -------
        torch.Tensor, shape=(n_frames, n_cg, n_cg), or None if no closed form is known.
        """
        return None
