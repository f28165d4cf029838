"""Data-driven maps: PCA fitted to data, and any torch module as a learned encoder.

PCA here is linear in the positions (centroid removal is linear too), so it
is a consistent map.  Frames are *not* superposed inside the map (a Kabsch
alignment would make it non-linear): superpose the trajectory before fitting
if rotations should not dominate the components.

A learned encoder ``Q = E(x)`` (an autoencoder's bottleneck, or a flow's slow
latent) is generally *not* consistent; the consistency check measures by how much.
"""

from __future__ import annotations

from typing import Sequence

import torch

from latentlab.maps.base import CGMap, Coordinate
from latentlab.validation import check_positions, fail


class PCAMap(CGMap):
    """Projection on principal components: ``Q = W (x_flat - mean)`` in nm.

    Parameters
    ----------
    atoms : sequence of int
    mean : tensor, shape=(3 n_read,), nm
    components : tensor, shape=(n_cg, 3 n_read)
        Orthonormal rows, largest variance first.
    center : bool
        Subtract the centroid of the read atoms from each frame first.
    explained_variance : tensor, shape=(n_cg,), nm^2, optional
    """

    is_linear = True
    kind = "pca"
    formula = "Q = first K principal components of the selected atoms (centroid removed)"

    def __init__(self, atoms: Sequence[int], mean, components, center: bool = True, n_atoms: int | None = None,
                 explained_variance=None, spec: str | None = None):
        comps = torch.as_tensor(components, dtype=torch.float64)
        if comps.dim() != 2 or comps.shape[1] != 3 * len(atoms):
            fail("components", f"has shape {tuple(comps.shape)}, expected (n_cg, {3 * len(atoms)})",
                 "give one row of 3*n_read weights per component")
        super().__init__(atoms, [Coordinate(f"pc{k + 1}", "nm") for k in range(comps.shape[0])], n_atoms=n_atoms, spec=spec)
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.components = comps
        self.center = bool(center)
        self.explained_variance = None if explained_variance is None else torch.as_tensor(explained_variance)

    @classmethod
    def fit(cls, positions, atoms: Sequence[int], n_components: int, center: bool = True,
            n_atoms: int | None = None, spec: str | None = None) -> "PCAMap":
        """Fit the components to frames ``positions (n_frames, n_atoms, 3)`` nm."""
        x = check_positions(positions, "positions", n_atoms=n_atoms, dtype=torch.float64)
        atoms = list(atoms)
        if max(atoms) >= x.shape[1]:
            fail("atoms", f"index {max(atoms)} is out of range for {x.shape[1]} atoms", "check the selection")
        dim = 3 * len(atoms)
        if not 1 <= n_components <= dim:
            fail("n_components", f"got {n_components}, expected 1..{dim} (3 x {len(atoms)} selected atoms)",
                 "ask for fewer components or select more atoms")
        if x.shape[0] <= n_components:
            fail("positions", f"has {x.shape[0]} frames, too few to fit {n_components} components",
                 "pass more frames than components")
        xs = x[:, atoms]
        if center:
            xs = xs - xs.mean(dim=1, keepdim=True)
        flat = xs.reshape(x.shape[0], dim)
        mean = flat.mean(0)
        _, s, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        # An SVD fixes each component only up to its sign: make the largest weight of each one positive, so
        # that fitting the same frames twice (the dashboard, the trainer) always gives the same map.
        sign = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
        vh = vh * sign
        var = s**2 / (x.shape[0] - 1)
        if float(var[n_components - 1]) <= 1e-12 * float(var[0]):
            fail("n_components", f"component {n_components} has zero variance in the data (rank-deficient map)",
                 "ask for fewer components")
        return cls(atoms, mean, vh[:n_components], center=center, n_atoms=n_atoms,
                   explained_variance=var[:n_components], spec=spec)

    def to_dict(self):
        return {"kind": self.kind, "atoms": list(self.atoms), "mean": self.mean.clone(),
                "components": self.components.clone(), "center": self.center, "n_atoms": self.n_atoms,
                "explained_variance": None if self.explained_variance is None else self.explained_variance.clone(),
                "spec": self.spec}

    def evaluate(self, xs):
        if self.center:
            xs = xs - xs.mean(dim=1, keepdim=True)
        flat = xs.reshape(xs.shape[0], -1)
        w = self.components.to(flat)
        return (flat - self.mean.to(flat)) @ w.T


class EncoderMap(CGMap):
    """Any torch module as a CG map: ``Q = module(x_read.flatten())``.

    Parameters
    ----------
    module : torch.nn.Module
        Takes ``(n_frames, 3 n_read)`` nm and returns ``(n_frames, n_cg)``.
        Must be written with batched operations (``torch.func.vmap`` is used
        to take its Jacobian).  A flow's slow latent fits here: wrap
        ``x -> T^-1(x)[:, slow]`` in a module.
    atoms : sequence of int
    n_cg : int
    names, units : sequence of str, optional
    periodic : sequence of bool, optional
        Which outputs are angles that wrap to (-pi, pi] (default: the module's ``periodic`` attribute if
        it has one, else none).
    bounds : sequence of (low, high) or None, optional
        Intervals the outputs cannot leave, e.g. a tanh or a bounded flow latent (default: the module's
        ``bounds`` attribute if it has one, else unbounded); the sampler reflects there.
    """

    kind = "encoder"
    formula = "Q = E(x): a learned encoder of the selected atoms' positions"

    def __init__(self, module: torch.nn.Module, atoms: Sequence[int], n_cg: int, n_atoms: int | None = None,
                 names: Sequence[str] | None = None, units: Sequence[str] | None = None, spec: str | None = None,
                 periodic: Sequence[bool] | None = None, bounds=None):
        names = list(names) if names is not None else [f"z{k}" for k in range(n_cg)]
        units = list(units) if units is not None else ["1"] * n_cg
        periodic = list(periodic if periodic is not None else getattr(module, "periodic", None) or [False] * n_cg)
        bounds = list(bounds if bounds is not None else getattr(module, "bounds", None) or [None] * n_cg)
        if len(names) != n_cg or len(units) != n_cg:
            fail("names", f"need {n_cg} names and units, got {len(names)} and {len(units)}", "give one per output")
        if len(periodic) != n_cg or len(bounds) != n_cg:
            fail("periodic", f"need {n_cg} periodic flags and bounds, got {len(periodic)} and {len(bounds)}",
                 "give one per output (None for an unbounded output)")
        for b in bounds:
            if b is not None and not (len(b) == 2 and float(b[0]) < float(b[1])):
                fail("bounds", f"got {b!r}", "give (low, high) with low < high, or None")
        coords = [Coordinate(n, u, bool(p), None if b is None else (float(b[0]), float(b[1])))
                  for n, u, p, b in zip(names, units, periodic, bounds)]
        super().__init__(atoms, coords, n_atoms=n_atoms, spec=spec)
        self.module = module

    def evaluate(self, xs):
        p = next(self.module.parameters(), None)
        flat = xs.reshape(xs.shape[0], -1)
        if p is not None and p.dtype != flat.dtype:
            flat = flat.to(p.dtype)
        out = self.module(flat)
        if out.dim() != 2 or out.shape[1] != self.n_cg:
            fail("module", f"returned shape {tuple(out.shape)}, expected (n_frames, {self.n_cg})",
                 "make the encoder output n_cg features per frame")
        return out.to(xs.dtype)
