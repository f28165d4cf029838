"""The flow's slow latent as a CG map, and all-atom structures for latent states through the flow.

* :func:`flow_slow_map` — ``Q = z(x)``: positions -> slow latent, a
  :class:`latentlab.maps.EncoderMap` with coordinates ``z0, z1, ...``, unit
  ``"1"``, bounded in ``(-B, B)``, evaluated in float64 with batched torch
  operations (``torch.func`` Jacobians apply, so the effective mass
  ``A = J M^-1 J^T`` and the consistency checks of docs/theory.md section 1
  work as for any map).
* :class:`FlowReconstructor` — for latent states ``Q (n_walkers, k)`` draw the
  fast part ``X ~ q(X | z = Q)`` and decode: ``(n_walkers, n_atoms, 3)`` nm.
  Molecules come out in the flow's rigid frame (frame atom 0 at the origin),
  so successive structures share one orientation.

Encoding goes ``x -> [z; X] = G^-1(y(x))``.  For the internal-coordinate
decoder the map reads the internal coordinates directly (rotation and
translation invariant); for the others it first rotates the molecule into
the rigid frame.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

from latentlab.maps.learned import EncoderMap
from latentlab.validation import fail


class SlowEncoder(torch.nn.Module):
    """``x_flat (n, 3 n_atoms) -> z (n, k)``: the slow latent of a flow (a float64 copy of it).

    Parameters
    ----------
    trained : TrainedFlow
    """

    def __init__(self, trained):
        super().__init__()
        self.flow = copy.deepcopy(trained.flow).double().eval()
        for p in self.flow.parameters():
            p.requires_grad_(False)
        self.system = trained.system
        self.n_atoms = trained.system.n_atoms
        self.n_slow = trained.flow.n_slow

    def latent(self, positions: torch.Tensor) -> torch.Tensor:
        """``[z; X]``, shape ``(n, D)``, of positions ``(n, n_atoms, 3)`` nm."""
        dec = self.flow.decoder
        if dec.kind == "internal":
            from latentlab.flows.geometry import internal_coordinates

            ic = internal_coordinates(dec.zmatrix, positions)
            u = dec.internal().inv(ic)
            return u @ torch.linalg.inv(dec.matrix).T
        return dec().inv(self.system.coordinates(positions))

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        x = flat.reshape(flat.shape[0], self.n_atoms, 3)
        return self.latent(x)[..., :self.n_slow]


class FlowSlowMap(EncoderMap):
    """The slow latent of a trained flow as a CG map (see :func:`flow_slow_map`).

    Parameters
    ----------
    trained : TrainedFlow
    spec : str, optional
        ``flow:PATH``.
    path : str, optional
        The flow file the map was read from; a map with a path is stored in model files by that path
        (:meth:`to_dict`), one without cannot be stored.
    """

    kind = "flow"

    def __init__(self, trained, spec: str | None = None, path: str | None = None):
        encoder = SlowEncoder(trained)
        self.path = None if path is None else os.path.abspath(os.fspath(path))
        n = trained.system.n_atoms
        k = trained.flow.n_slow
        b = float(trained.flow.bound)  # the slow latent lives in the box [-B, B]^k
        super().__init__(encoder, range(n), k, n_atoms=n, names=[f"z{i}" for i in range(k)], units=["1"] * k, spec=spec,
                         periodic=[False] * k, bounds=[(-b, b)] * k)
        self.trained = trained

    def evaluate(self, xs):
        flat = xs.reshape(xs.shape[0], -1).to(torch.float64)
        return self.module(flat)

    def to_dict(self) -> dict | None:
        """``{"kind": "flow", "path", "n_atoms", "spec"}``: the map is rebuilt from its flow file; None without one."""
        if self.path is None:
            return None
        return {"kind": "flow", "path": self.path, "n_atoms": self.n_atoms, "spec": self.spec}


def flow_slow_map(trained, spec: str | None = None) -> FlowSlowMap:
    """A :class:`latentlab.maps.CGMap` ``Q = z(x)`` from a :class:`~latentlab.flows.TrainedFlow` (or a flow file path).

    Names ``z0, z1, ...``, unit ``"1"``, not periodic, bounds ``(-B, B)``; float64.
    """
    if isinstance(trained, (str, bytes)) or hasattr(trained, "__fspath__"):
        from latentlab.flows.store import load_flow

        path = os.path.abspath(os.fspath(trained))
        spec = spec or f"flow:{path}"
        return FlowSlowMap(load_flow(path), spec=spec, path=path)
    return FlowSlowMap(trained, spec=spec)


class FlowReconstructor:
    """All-atom structures for slow-latent states, sampled through the flow.

    Parameters
    ----------
    trained : TrainedFlow or str
        A trained flow or the path of a flow file.

    Attributes
    ----------
    topology : mdtraj.Topology
    n_atoms : int
    n_cg : int
        Slow dimensions ``k``.
    bounds : tuple of float
        ``(-B, B)``: the box of the slow latent.
    """

    def __init__(self, trained):
        if isinstance(trained, (str, bytes)) or hasattr(trained, "__fspath__"):
            from latentlab.flows.store import load_flow

            trained = load_flow(trained)
        self.trained = trained
        self.flow = trained.flow
        self.system = trained.system
        self.topology = trained.system.topology
        self.n_atoms = trained.system.n_atoms
        self.n_cg = trained.flow.n_slow
        self.bounds = (-trained.flow.bound, trained.flow.bound)

    def reconstruct(self, Q, seed: int | None = None) -> np.ndarray:
        """Structures for latent states.

        Parameters
        ----------
        Q : array, shape=(n_walkers, k) or (k,)
            Slow-latent values inside ``(-B, B)``.
        seed : int, optional
            Seed of the fast-part draw (the global torch RNG is left as it was).

        Returns
        -------
        np.ndarray, shape=(n_walkers, n_atoms, 3), float64, nm
        """
        q = torch.as_tensor(np.atleast_2d(np.asarray(Q.detach().cpu() if isinstance(Q, torch.Tensor) else Q,
                                                     dtype=np.float64)))
        if q.dim() != 2 or q.shape[1] != self.n_cg:
            fail("Q", f"has shape {tuple(q.shape)}", f"pass (n_walkers, {self.n_cg}) slow-latent values")
        if not torch.isfinite(q).all() or (q.abs() >= self.bounds[1]).any():
            fail("Q", f"has values outside the slow latent's box ({self.bounds[0]:g}, {self.bounds[1]:g}) or non-finite",
                 "pass latent states of this flow (its walkers stay inside the box)")
        p = next(self.flow.parameters())
        state = torch.get_rng_state()
        if seed is not None:
            torch.manual_seed(int(seed))
        try:
            with torch.no_grad():
                y = self.flow.decode(q.to(device=p.device, dtype=p.dtype))
                x = self.system.positions(y.double())
        finally:
            if seed is not None:
                torch.set_rng_state(state)
        return x.cpu().numpy()

    def pdb(self, Q, seed: int | None = None) -> str:
        """PDB text of the structure for one latent state ``Q (k,)``."""
        from latentlab.reconstruct import pdb_string

        return pdb_string(self.topology, self.reconstruct(np.asarray(Q).reshape(1, -1), seed=seed)[0])
