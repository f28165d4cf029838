"""Force-matching targets ``(Q, g)`` of a data set and a map: the estimator chosen, the log-det term added.

``g(q)`` is the frame-wise target for ``grad_Q V`` (docs/theory.md section 3):

* maps with a closed-form A(Q) (consistent maps):
  ``g = B grad U - kT div B + c kT B grad_q ln det A(q)`` (:func:`latentlab.forces.force_matching_target`);
* maps whose A(Q) comes from data (a kernel table; inconsistent maps such as phi/psi), and the
  rigid-rotation estimator: ``g = (mean-force estimate) + c kT grad_Q ln det A_bar(Q)`` with ``A_bar`` the
  very mass model the sampler will use.  Then the latent dynamics with ``H = 1/2 P^T A_bar P + V``
  samples exactly ``p(Q)`` for ``c = -1/2``, whatever the map's inconsistency.

``c`` is set by the convention (:mod:`latentlab.conventions`).
"""

from __future__ import annotations

import torch

from latentlab.conventions import logdet_coefficient
from latentlab.forces.mean_force import METHODS, force_matching_target, local_pmf_gradient
from latentlab.validation import fail

#: Estimator choices of :func:`prepare_targets` (``auto`` resolves with :func:`resolve_method`).
TARGET_METHODS = ("auto", *METHODS, "rigid-rotation")


def resolve_device(device) -> torch.device:
    """``"auto"`` -> CUDA when torch sees it, else CPU; refuses CUDA when absent."""
    name = str(device) if device is not None else "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        fail("device", "CUDA was asked for but torch sees no CUDA device (a CPU-only torch, or no GPU driver)",
             "use the cpu device (--device cpu, or device='cpu' in Python), or 'auto' to take a GPU when there is one")
    try:
        return torch.device(name)
    except RuntimeError:
        fail("device", f"got {device!r}", "use 'auto', 'cpu' or 'cuda'")


def resolve_method(method: str, cg_map, dataset) -> tuple[str, str]:
    """The mean-force estimator ``method`` stands for, and why.

    ``"auto"``: ``"rigid-rotation"`` (:mod:`latentlab.forces.torsion`, far less noise) for maps made only of
    dihedrals when the data set's bonds allow it, else ``"mass-weighted"``.

    Returns
    -------
    method : str
    reason : str
        One sentence for logs and the model's training record.
    """
    if method not in TARGET_METHODS:
        fail("method", f"unknown method {method!r}", f"use one of {', '.join(TARGET_METHODS)}")
    if method != "auto":
        return method, "asked for"
    from latentlab.forces.torsion import rotation_fields
    from latentlab.maps.internal import DihedralMap

    if not isinstance(cg_map, DihedralMap):
        return "mass-weighted", "the map is not made of dihedrals"
    if not dataset.has_topology:
        return "mass-weighted", "the data set has no topology, so its bonds are unknown"
    try:
        rotation_fields(cg_map, dataset.topology)
    except ValueError as err:
        return "mass-weighted", f"no rigid rotation fits the map ({str(err).split('. Fix')[0]})"
    return "rigid-rotation", "every coordinate is a dihedral about a bond with a rigid side to rotate"


def prepare_targets(dataset, cg_map, mass, convention: str = "consistent", method: str = "auto", device="cpu",
                    dtype=torch.float32, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """CG coordinates and force-matching targets for every frame.

    Parameters
    ----------
    dataset : Dataset
        Needs positions, forces and masses.
    cg_map : CGMap
    mass : MassModel
        The A(Q) the dynamics will use; when it is a kernel table (no closed form) or the estimator is the
        rigid rotation, the log-det term is taken from it (see the module docstring).
    convention : {"consistent", "eq9", "pmf"}
    method : {"auto", "mass-weighted", "pseudo-inverse", "rigid-rotation"}
        Estimator of the mean force (:func:`resolve_method`; all are unbiased, they differ in noise).
    device, dtype : where and in which precision the tensors are returned (computed in float64 on the CPU first).
    batch_size : int
        Frames per vectorised chunk.

    Returns
    -------
    Q : torch.Tensor, shape=(n_frames, n_cg)
    g : torch.Tensor, shape=(n_frames, n_cg)
        kJ/mol per unit of each coordinate.
    """
    if not dataset.has_forces:
        fail("dataset", f"{dataset.name!r} has no forces", "force matching needs forces: load or generate data with "
             "forces, or learn from configurations alone with relative entropy (latentlab train --objective "
             "relative-entropy)")
    from latentlab.data.lazy import BLOCK_FRAMES

    c = logdet_coefficient(convention)
    method, _ = resolve_method(method, cg_map, dataset)
    masses = torch.as_tensor(dataset.masses, dtype=torch.float64)
    kernel = mass.kind in ("kernel", "grid")
    qs, gs = [], []
    for start in range(0, dataset.n_frames, BLOCK_FRAMES):  # blocks of frames: memory bounded, lazy data streamed
        pos_np, frc_np = dataset.frame_block(start, min(start + BLOCK_FRAMES, dataset.n_frames))
        pos, frc = torch.as_tensor(pos_np, dtype=torch.float64), torch.as_tensor(frc_np, dtype=torch.float64)
        qs.append(cg_map.map_frames(pos, batch_size))
        if method == "rigid-rotation":
            from latentlab.forces.torsion import torsion_pmf_gradient

            gs.append(torsion_pmf_gradient(cg_map, pos, frc, dataset.topology))
        elif kernel or c == 0.0:
            gs.append(local_pmf_gradient(cg_map, pos, frc, masses, dataset.kT, method=method, batch_size=batch_size))
        else:  # closed-form A: the log-det term frame by frame (B grad_q ln det A(q))
            gs.append(force_matching_target(cg_map, pos, frc, masses, dataset.kT, convention=convention, method=method,
                                            batch_size=batch_size))
    q, g = torch.cat(qs), torch.cat(gs)
    if c != 0.0 and (method == "rigid-rotation" or kernel):
        g = g + c * dataset.kT * mass.grad_logdet(q)
    device = resolve_device(device)
    return q.to(device=device, dtype=dtype), g.detach().to(device=device, dtype=dtype)
