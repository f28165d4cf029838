"""Batched internal-coordinate kernels shared by the distance, angle and dihedral maps.

All inputs are ``(..., 3)`` vectors in nm; outputs keep the leading shape.
Written with plain torch operations so that vmap/jacrev apply.
"""

from __future__ import annotations

import torch

from latentlab.validation import fail

#: Distances below this (nm) count as coincident atoms: a map is undefined there.
MIN_DISTANCE = 1e-6
#: |cos| above this counts as collinear: angle Jacobians are singular there.
MAX_ABS_COS = 1.0 - 1e-10


def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a - b|`` in nm."""
    return torch.linalg.vector_norm(a - b, dim=-1)


def cos_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle a-b-c at vertex b."""
    u = a - b
    v = c - b
    return (u * v).sum(-1) / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1))


def angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Bond angle a-b-c in rad, in [0, pi]; atan2 form, accurate near 0 and pi."""
    u = a - b
    v = c - b
    cross = torch.linalg.vector_norm(torch.linalg.cross(u, v, dim=-1), dim=-1)
    return torch.atan2(cross, (u * v).sum(-1))


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral a-b-c-d in rad, in (-pi, pi], IUPAC sign convention (as mdtraj)."""
    b1 = b - a
    b2 = c - b
    b3 = d - c
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    # atan2(|b2| b1 . n2, n1 . n2) (Blondel & Karplus 1996), the form mdtraj uses.
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def check_separated(xs: torch.Tensor, pairs, what: str, labels) -> None:
    """Refuse frames in which any pair ``(i, j)`` of read atoms coincides.

    ``pairs`` index the read atoms; ``labels`` gives their indices in the whole system.
    """
    if len(pairs) == 0:
        return
    i = torch.as_tensor([p[0] for p in pairs], device=xs.device)
    j = torch.as_tensor([p[1] for p in pairs], device=xs.device)
    d = distance(xs[:, i], xs[:, j])  # (F, P)
    bad = d < MIN_DISTANCE
    if bool(bad.any()):
        f, p = torch.nonzero(bad)[0].tolist()
        fail("positions", f"atoms {labels[pairs[p][0]]} and {labels[pairs[p][1]]} of the {what} coincide in frame {f} "
             f"(distance {float(d[f, p]):.2e} nm)", "coincident atoms make the map undefined; check the frame or the atom selection")


def check_not_collinear(xs: torch.Tensor, triples, what: str, labels) -> None:
    """Refuse frames in which any triple ``(i, j, k)`` of read atoms is collinear."""
    if len(triples) == 0:
        return
    idx = [torch.as_tensor([t[n] for t in triples], device=xs.device) for n in range(3)]
    c = cos_angle(xs[:, idx[0]], xs[:, idx[1]], xs[:, idx[2]]).abs()
    bad = c > MAX_ABS_COS
    if bool(bad.any()):
        f, t = torch.nonzero(bad)[0].tolist()
        fail("positions", f"atoms {tuple(labels[i] for i in triples[t])} of the {what} are collinear in frame {f}",
             "the map's Jacobian is singular (rank-deficient) for collinear atoms; check the frame or pick other atoms")


def random_rotations(n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """``n`` Haar-random rotation matrices ``(n, 3, 3)`` (QR of Gaussian matrices, signs fixed, det +1)."""
    g = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]
    q[:, :, 0] *= torch.linalg.det(q)[:, None]
    return q
