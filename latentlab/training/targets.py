"""Force-matching targets ``(Q, g)`` for a data set and a map, computed once and cached in memory.

``g(q)`` is the frame-wise target for ``grad_Q V`` (THEORY.md section 3):

* maps with a closed-form A(Q) (consistent maps):
  ``g = B grad U - kT div B + c kT B grad_q ln det A(q)``
  (:func:`latentlab.forces.force_matching_target`);
* maps whose A(Q) comes from data (a kernel table; inconsistent maps such as
  phi/psi): ``g = B grad U - kT div B + c kT grad_Q ln det A_bar(Q)`` with
  ``A_bar`` the very mass function the sampler will use.  Then the latent
  dynamics with ``H = 1/2 P^T A_bar P + V`` samples ``exp(-beta V) det(A_bar)^(-c*2)...``
  i.e. exactly ``p(Q)`` for ``c = -1/2``, whatever the map's inconsistency.

``c`` is set by the convention (:mod:`latentlab.conventions`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from latentlab.conventions import logdet_coefficient
from latentlab.forces import force_matching_target
from latentlab.forces.mean_force import METHODS, local_pmf_gradient
from latentlab.validation import fail

#: Estimator choices of :func:`prepare_targets` (``auto`` resolves with :func:`resolve_method`).
TARGET_METHODS = ("auto", *METHODS, "rigid-rotation")

_CACHE: "OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]]" = OrderedDict()
_CACHE_SIZE = 8


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when torch sees it, else CPU; refuses CUDA when absent."""
    name = str(device) if device is not None else "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        fail("device", "CUDA was asked for but torch sees no CUDA device", "use device='cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        fail("device", f"got {device!r}", "use 'auto', 'cpu' or 'cuda'")


def _fingerprint(dataset, cg_map, convention, method, mass) -> tuple:
    h = hashlib.sha1()
    pos = np.ascontiguousarray(dataset.positions)
    h.update(pos[:: max(1, len(pos) // 64)].tobytes())
    if dataset.forces is not None:
        frc = np.ascontiguousarray(dataset.forces)
        h.update(frc[:: max(1, len(frc) // 64)].tobytes())
    mass_key = None if mass is None else (mass.kind, id(mass))
    return (dataset.source, dataset.name, dataset.n_frames, float(dataset.temperature), cg_map.spec, repr(cg_map),
            tuple(cg_map.atoms), convention, method, mass_key, h.hexdigest())


def resolve_method(method: str, cg_map, dataset) -> str:
    """The mean-force estimator ``method`` stands for.

    ``"auto"``: ``"rigid-rotation"`` (:mod:`latentlab.forces.torsion`, far less noise) for maps made only
    of dihedrals when the data set's topology allows it, else ``"mass-weighted"``.
    """
    if method not in TARGET_METHODS:
        fail("method", f"unknown method {method!r}", f"use one of {', '.join(TARGET_METHODS)}")
    if method != "auto":
        return method
    from latentlab.forces.torsion import rotation_fields
    from latentlab.maps.internal import DihedralMap

    if isinstance(cg_map, DihedralMap) and dataset.has_topology:
        try:
            rotation_fields(cg_map, dataset.topology)
            return "rigid-rotation"
        except ValueError:
            pass
    return "mass-weighted"


def prepare_targets(dataset, cg_map=None, convention: str = "consistent", method: str = "auto",
                    device="cpu", dtype=torch.float32, mass=None, cache: bool = True,
                    batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """CG coordinates and force-matching targets for every frame.

    Parameters
    ----------
    dataset : Dataset
        Needs positions, forces and masses.
    cg_map : CGMap, optional
        Default: the data set's default map.
    convention : {"consistent", "seed_eq9", "pmf"}
    method : {"auto", "mass-weighted", "pseudo-inverse", "rigid-rotation"}
        Estimator of the mean force (:func:`resolve_method`; all are unbiased, they differ in noise).
    device, dtype : where and in which precision the tensors are returned
        (computed in float64 on the CPU first).
    mass : MassModel, optional
        The A(Q) the dynamics will use.  When it is a kernel table (no closed
        form), the log-det term is taken from it (see the module docstring);
        default: :func:`latentlab.simulation.mass_function` of the map.
    cache : bool
        Keep the float64 result in memory (keyed by data, map, convention, method)
        so repeated training runs skip the Jacobian work.

    Returns
    -------
    Q : torch.Tensor, shape=(n_frames, n_cg)
    g : torch.Tensor, shape=(n_frames, n_cg)
        kJ/mol per unit of each coordinate.
    """
    from latentlab.simulation import mass_function

    if not dataset.has_forces:
        fail("dataset", f"{dataset.name!r} has no forces", "force matching needs forces: load or generate data with forces, or learn from "
             "configurations alone with relative entropy (latentlab train --objective relative-entropy)")
    cg_map = cg_map if cg_map is not None else dataset.map()
    c = logdet_coefficient(convention)
    method = resolve_method(method, cg_map, dataset)
    if mass is None:
        mass = mass_function(cg_map, dataset, consistency=False)
    key = _fingerprint(dataset, cg_map, convention, method, mass if mass.kind == "kernel" else None)
    if cache and key in _CACHE:
        _CACHE.move_to_end(key)
        q, g = _CACHE[key]
    else:
        pos, frc = dataset.tensors(torch.float64)
        masses = torch.as_tensor(dataset.masses, dtype=torch.float64)
        q = cg_map.map_frames(pos, batch_size)
        if method == "rigid-rotation":
            from latentlab.forces.torsion import torsion_pmf_gradient

            g = torsion_pmf_gradient(cg_map, pos, frc, dataset.topology)
            if c != 0.0:
                g = g + c * dataset.kT * grad_logdet(mass, q)
        elif mass.kind == "kernel" and c != 0.0:
            g = local_pmf_gradient(cg_map, pos, frc, masses, dataset.kT, method=method, batch_size=batch_size)
            g = g + c * dataset.kT * grad_logdet(mass, q)
        else:
            g = force_matching_target(cg_map, pos, frc, masses, dataset.kT, convention=convention, method=method,
                                      batch_size=batch_size)
        g = g.detach()
        if cache:
            _CACHE[key] = (q, g)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    device = resolve_device(device)
    return q.to(device=device, dtype=dtype), g.to(device=device, dtype=dtype)


def grad_logdet(mass, Q: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """``grad_Q ln det A(Q)`` of a mass function, ``(n_frames, n_cg)``."""
    out = []
    for s in range(0, Q.shape[0], batch_size):
        q = Q[s:s + batch_size].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(torch.logdet(mass(q)).sum(), q)
        out.append(g)
    return torch.cat(out)


def clear_cache() -> None:
    """Forget cached targets."""
    _CACHE.clear()
