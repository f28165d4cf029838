"""Eigen-decomposition of a batch of small symmetric matrices, in closed form for 1 to 3 dimensions.

The friction step of the latent sampler needs ``A = U diag(w) U^T`` for every walker and step.
``torch.linalg.eigh`` calls LAPACK once per matrix, about 1 us of overhead per 3 x 3 matrix on a CPU
(1.0 ms for 1024 walkers, more than the rest of the friction step); the closed forms below are a few
dozen batched elementwise operations whatever the number of walkers, on any device.

* ``N = 2``: one Jacobi rotation, ``theta = 1/2 atan2(2 a01, a00 - a11)``.
* ``N = 3``: the eigenvalues from the trigonometric solution of the characteristic cubic (Smith 1961);
  the eigenvector of the eigenvalue farthest from the other two as the largest cross product of two
  rows of ``A - lambda I``; the other two by one Jacobi rotation of ``A`` restricted to the plane
  orthogonal to it (the scheme of Eberly, "A robust eigensolver for 3 x 3 symmetric matrices", 2014).
  Only the first eigenvalue comes from the cubic: the returned eigenvalues are the Rayleigh quotients
  ``u^T A u`` of the returned orthonormal vectors, so that ``U diag(w) U^T`` reproduces ``A`` to a
  few machine epsilons of ``|A|`` even where eigenvalues are (nearly) degenerate and the cubic's roots
  lose half their digits.

Eigenvalues are not sorted (the sampler needs none of the order).  Larger matrices go to
``torch.linalg.eigh``.

References
----------
Smith, "Eigenvalues of a symmetric 3 x 3 matrix", Commun. ACM 4, 168 (1961).
Eberly, "A Robust Eigensolver for 3 x 3 Symmetric Matrices", Geometric Tools (2014).
Golub & Van Loan, Matrix Computations, 4th ed. (2013), section 8.5: the symmetric Jacobi rotation.
"""

from __future__ import annotations

import math

import torch


def symmetric_eigh(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``(W, N)`` and orthonormal eigenvectors ``(W, N, N)`` (columns) of symmetric ``a (W, N, N)``.

    Closed form for ``N <= 3`` (see the module docstring; only the upper triangle is read), else
    ``torch.linalg.eigh``.  Eigenvalues are not sorted; ``a = U diag(w) U^T`` to round-off.  A walker
    with non-finite entries gets non-finite eigenvalues (no exception).
    """
    n = a.shape[-1]
    if n == 1:
        return a[:, :, 0].clone(), torch.ones_like(a)
    if n == 2:
        return _eigh2(a)
    if n == 3:
        return _eigh3(a)
    return torch.linalg.eigh(a)


def _rotation(a00, a01, a11):
    """Jacobi rotation ``(c, s)`` diagonalising ``[[a00, a01], [a01, a11]]`` and the two Rayleigh quotients.

    The columns ``(c, s)`` and ``(-s, c)`` are the eigenvectors with eigenvalues ``w0``, ``w1``.
    """
    theta = 0.5 * torch.atan2(2.0 * a01, a00 - a11)
    c, s = torch.cos(theta), torch.sin(theta)
    cc, ss, cs2 = c * c, s * s, 2.0 * c * s * a01
    return c, s, a00 * cc + cs2 + a11 * ss, a00 * ss - cs2 + a11 * cc


def _eigh2(a):
    c, s, w0, w1 = _rotation(a[:, 0, 0], a[:, 0, 1], a[:, 1, 1])
    u = torch.stack([c, s, -s, c], dim=-1).reshape(-1, 2, 2).transpose(1, 2)  # columns (c, s), (-s, c)
    return torch.stack([w0, w1], dim=-1), u


def _eigh3(a):
    # Vectors are (3, W) tensors (component, walker): on a CPU, fancy indexing along the walkers,
    # reductions over a trailing dimension of 3 and batched 3 x 3 products cost 10-100 us each at 1024
    # walkers, an elementwise operation on (3, W) a few us; the operation count is what costs.
    w = a.shape[0]
    tiny = torch.finfo(a.dtype).tiny
    flat = a.reshape(w, 9).T.contiguous()  # (9, W), entry 3 i + j
    scale = flat.abs().amax(0).clamp_min(tiny)
    flat = flat / scale  # B = A / scale, entries in [-1, 1]: no overflow in the invariants
    b = flat.reshape(3, 3, w)  # b[i, j] = B_ij
    # diagonal (B00, B11, B22) and off-diagonal (B12, B02, B01): entry k of the second pairs with k of the first
    d, off = flat[_DIAG_OFF.to(a.device)].reshape(2, 3, w).unbind(0)
    q = d.mean(0)
    d = d - q
    sq_off = off * off
    p = torch.sqrt(((d * d).sum(0) + 2.0 * sq_off.sum(0)) / 6.0)
    # det(B - q I) = d0 d1 d2 + 2 B01 B02 B12 - sum_k d_k off_k^2; r = det / (2 p^3) is cos(3 phi) in
    # lambda = q + 2 p cos(phi + 2 pi k / 3)
    det = d.prod(0) + 2.0 * off.prod(0) - (d * sq_off).sum(0)
    r = (det / (2.0 * p.clamp_min(tiny) ** 3)).clamp(-1.0, 1.0)
    # r >= 0: the largest root is the one farthest from the others; r < 0: the smallest one
    phi = torch.acos(r) / 3.0
    first = torch.addcmul(q, p, torch.cos(torch.where(r >= 0, phi, phi + 2.0 * math.pi / 3.0)), value=2.0)
    # its eigenvector: the largest cross product of two rows of B - first I (rows 0 x 1, 1 x 2, 2 x 0)
    m = b.clone()
    m.diagonal(0, 0, 1).sub_(first[:, None])  # (3 rows, 3, W)
    cross = torch.linalg.cross(m, m.roll(-1, 0), dim=1)  # (3 pairs, 3, W)
    norm2, best = (cross * cross).sum(1).max(0)
    e = cross.gather(0, best.expand(1, 3, w))[0] * torch.rsqrt(norm2)  # (3, W)
    e = torch.where(norm2 > 0, e, torch.eye(3, 1, dtype=b.dtype, device=b.device))  # B = q I: any unit vector
    # an orthonormal basis (x, y) of the plane orthogonal to e: x from the two larger components of e
    e0, e1, e2 = e
    zero = torch.zeros_like(q)
    x = torch.where(e0.abs() > e1.abs(), torch.stack([-e2, zero, e0]), torch.stack([zero, e2, -e1]))
    x = x * torch.rsqrt((x * x).sum(0))
    y = torch.linalg.cross(e, x, dim=0)
    vecs = torch.stack([e, x, y], dim=1)  # (3 components, 3 vectors, W)
    bv = (b[:, :, None] * vecs[None]).sum(1)  # (3 components, 3 vectors, W): B e, B x, B y
    ebe, xbx, yby = (vecs * bv).sum(0)
    c, s, wx, wy = _rotation(xbx, (x * bv[:, 2]).sum(0), yby)
    vals = torch.stack([ebe, wx, wy]) * scale  # (3, W)
    u = torch.stack([e, torch.addcmul(c * x, s, y), torch.addcmul(c * y, s, x, value=-1.0)], dim=1)
    return vals.T, u.permute(2, 0, 1)  # (W, 3), (W, 3, 3) with the vectors as columns


#: Rows of the flattened 3 x 3 matrix holding (B00, B11, B22) and (B12, B02, B01).
_DIAG_OFF = torch.tensor([0, 4, 8, 5, 2, 1])
