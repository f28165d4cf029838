"""Bijections of the structured flow, as ``torch.distributions.Transform`` objects (zuko's style).

Every transform here maps in the *generative* direction (latent -> coordinates),
acts on the last axis (event dimension 1), and returns output and log-Jacobian
together with ``call_and_ladj(x) -> (y, ladj)``; ``.inv`` is the exact inverse.
The learnable ones follow zuko's lazy pattern: a ``torch.nn.Module`` holds the
parameters and builds the ``Transform`` when called.

* :class:`StochasticMatrixTransform` / :class:`SoftmaxLinear`: ``y = A u`` with
  every row of ``A`` a softmax (Stupp & Koutsourelakis, "Energy-based
  coarse-graining in molecular dynamics: a flow-based framework without data").
* :class:`PseudoAtomLinear`: the per-atom version for molecules (every atom a
  convex combination of pseudo-atoms, component by component, in the reduced
  coordinates of the rigid frame).
* :class:`PositiveTransform`: ``y_i = exp(v_i)`` on chosen entries (the two
  rigid-frame coordinates that must be > 0 in the canonical frame).
* :class:`InternalCoordinateTransform`: unconstrained latent -> bond lengths
  (> 0), angles (0, pi) and torsions (a circle cut opposite a centre), one
  fixed elementwise bijection each.

Tested (tests/test_flows.py) like zuko tests its own: inverse round trip and
``ladj`` against ``slogdet`` of the autograd Jacobian in float64.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Transform, constraints

import zuko.transforms  # noqa: F401  (adds Transform.call_and_ladj)

from latentlab.validation import fail

_VECTOR = constraints.independent(constraints.real, 1)


class _VectorTransform(Transform):
    domain = _VECTOR
    codomain = _VECTOR
    bijective = True

    def log_abs_det_jacobian(self, x, y):
        return self.call_and_ladj(x)[1]


# ---------------------------------------------------------------------------- linear maps with softmax rows


class StochasticMatrixTransform(_VectorTransform):
    """``y = A u`` for a fixed invertible matrix ``A`` (shape ``(D, D)``); ``ladj = log|det A|``."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.matrix = matrix
        self._logdet = torch.linalg.slogdet(matrix)[1]

    def _call(self, u):
        return u @ self.matrix.T

    @property
    def inverse_matrix(self) -> torch.Tensor:
        if not hasattr(self, "_inv_matrix"):
            self._inv_matrix = torch.linalg.inv(self.matrix)
        return self._inv_matrix

    def _inverse(self, y):
        # an explicit inverse and a matmul: linalg.solve with a batched right-hand side gives wrong
        # Jacobians under torch.func.vmap(jacfwd(...)) in torch 2.13 (tests/test_flows.py checks the Jacobian)
        return y @ self.inverse_matrix.T

    def call_and_ladj(self, u):
        return self._call(u), self._logdet.expand(u.shape[:-1])

    @property
    def inv(self):
        return _Inverse(self)


class _Inverse(_VectorTransform):
    """Inverse of one of the transforms above (with ``call_and_ladj``)."""

    def __init__(self, base: Transform):
        super().__init__()
        self.base = base

    def _call(self, y):
        return self.base._inverse(y)

    def _inverse(self, x):
        return self.base._call(x)

    def call_and_ladj(self, y):
        x = self.base._inverse(y)
        return x, -self.base.call_and_ladj(x)[1]

    @property
    def inv(self):
        return self.base


class SoftmaxLinear(torch.nn.Module):
    """Learnable ``A`` with softmax rows: ``A_ij = exp(L_ij) / sum_k exp(L_ik)``.

    Parameters
    ----------
    logits : tensor, shape=(D, D)
        Initial unconstrained parameters ``L`` (e.g. ``alpha * I``: a diagonal
        weight ``e^alpha / (e^alpha + D - 1)`` per row).
    """

    def __init__(self, logits):
        super().__init__()
        logits = torch.as_tensor(logits)
        if not logits.is_floating_point():
            logits = logits.to(torch.get_default_dtype())
        if logits.dim() != 2 or logits.shape[0] != logits.shape[1]:
            fail("logits", f"has shape {tuple(logits.shape)}", "pass a square (D, D) matrix")
        self.logits = torch.nn.Parameter(logits.clone())

    @property
    def matrix(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    def forward(self) -> StochasticMatrixTransform:
        return StochasticMatrixTransform(self.matrix)


class PseudoAtomLinear(torch.nn.Module):
    """Per-atom softmax map from pseudo-atoms to a rigid frame's reduced coordinates.

    Each atom but the frame origin has a pseudo-atom with the same free Cartesian
    components (``a1``: z; ``a2``: x, z; the others: x, y, z), so the latent has the
    layout of the reduced coordinates.  Every component of an atom is a convex
    combination of the same component of all pseudo-atoms: ``A_ij = softmax_j(L_ij)``
    over the latent entries ``j`` of the component of row ``i``, 0 across components.

    Notes
    -----
    Stupp & Koutsourelakis write the map as ``C kron I_3`` (one mixing matrix for the
    three components) with the rows of the fixed coordinates removed.  With the frame
    used here (a1 on the z axis, a2 in the xz plane) that leaves N-2, N-3 and N-1 rows
    for the x, y and z components against N-2 columns each: the matrix is singular.
    One softmax block per component keeps the convex combinations and is invertible.

    Parameters
    ----------
    frame : latentlab.flows.RigidFrame
    alpha : float
        Initial logit of each atom's own pseudo-atom (others 0): ``A`` starts near the identity.
    """

    def __init__(self, frame, alpha: float = 3.0):
        super().__init__()
        n = frame.n_atoms
        comp = torch.as_tensor([2, 0, 2] + [0, 1, 2] * (n - 3))
        d = comp.numel()
        self.n_atoms = n
        same = comp[:, None] == comp[None, :]
        self.register_buffer("block_mask", torch.where(same, 0.0, -1e30).to(torch.get_default_dtype()))
        logits = torch.zeros(d, d, dtype=torch.float64) + float(alpha) * torch.eye(d, dtype=torch.float64)
        self.logits = torch.nn.Parameter(logits.to(torch.get_default_dtype()))

    @property
    def matrix(self) -> torch.Tensor:
        return torch.softmax(self.logits + self.block_mask.to(self.logits), dim=-1)

    def forward(self) -> StochasticMatrixTransform:
        return StochasticMatrixTransform(self.matrix)


class PositiveTransform(_VectorTransform):
    """``y_i = exp(v_i)`` for ``i`` in ``index``, identity elsewhere; ``ladj = sum_i v_i``."""

    def __init__(self, index):
        super().__init__()
        self.index = torch.as_tensor(index, dtype=torch.long)

    def _mask(self, v):
        mask = torch.zeros(v.shape[-1], dtype=torch.bool, device=v.device)
        return mask.index_fill(0, self.index.to(v.device), True)

    def _call(self, v):  # functional (no in-place writes), so that torch.func.vmap applies
        mask = self._mask(v)
        return torch.where(mask, torch.exp(torch.where(mask, v, torch.zeros_like(v))), v)

    def _inverse(self, y):
        mask = self._mask(y)
        return torch.where(mask, torch.log(torch.where(mask, y, torch.ones_like(y))), y)

    def call_and_ladj(self, v):
        return self._call(v), v[..., self.index].sum(-1)

    @property
    def inv(self):
        return _Inverse(self)


# ---------------------------------------------------------------------------- internal coordinates

BOND, ANGLE, TORSION = 0, 1, 2


class InternalCoordinateTransform(_VectorTransform):
    """Elementwise bijections from an unconstrained latent to internal coordinates.

    * bond ``r = r0 exp(s u)`` (nm, > 0);
    * angle ``theta = pi sigmoid(logit(theta0 / pi) + s u)`` (rad, in (0, pi));
    * torsion on the whole circle (``fold = 1``): ``phi = phi0 + 2 atan(s u)``, the circle cut at
      ``phi0 + pi``;
    * torsion of an ``n``-fold symmetric rotor (``fold = n``, e.g. 3 for a methyl group; see
      Notes), in the window ``w = 2 pi / n`` around ``phi0``: ``phi = phi0 + w (Phi(s u) - 1/2)`` with
      ``Phi`` the standard normal CDF, so that ``u ~ N(0, 1/s^2)`` fills the window uniformly
      and a Gaussian ``u`` keeps a finite density at the window's edges (the barrier tops,
      where the Boltzmann density is small but not zero).

    ``u = 0`` gives the centre ``(r0, theta0, phi0)``; ``s`` is the slope in
    latent units (``dr/du = s r0``, ``dtheta/du ~ s theta0 (1 - theta0/pi)``,
    ``dphi/du = 2 s`` or ``s w / sqrt(2 pi)`` at the centre).

    Notes
    -----
    Rotating a methyl group by 120 degrees permutes its three identical hydrogens: the
    configuration is a relabelling with the same energy.  A flow restricted to one of the
    three windows samples the Boltzmann density restricted to it, which is one third of the
    whole and gives the same average for every observable that does not tell the three
    hydrogens apart (all of latentlab's).  Without the window a Gaussian over one well leaks
    rare samples into the two equivalent wells, where their importance weights explode; with
    a window but an ``atan`` map the density of the flow vanishes faster than exponentially
    at the window's edges, and samples near the barrier tops get huge weights instead.

    Parameters
    ----------
    kind : tensor, shape=(D,), int
        0 bond, 1 angle, 2 torsion.
    center : tensor, shape=(D,)
        ``r0`` nm, ``theta0`` rad, ``phi0`` rad.
    slope : tensor, shape=(D,)
    fold : tensor, shape=(D,), int, optional
        Symmetry number of each torsion (default 1; ignored for bonds and angles).  The window
        ``2 pi / fold`` is computed in the working precision, so that ``fold`` windows tile the circle.
    """

    def __init__(self, kind, center, slope, fold=None):
        super().__init__()
        self.kind, self.center, self.slope = kind, center, slope
        self.fold = torch.ones_like(kind) if fold is None else fold
        self._bond = kind == BOND
        self._angle = kind == ANGLE
        self._tors = kind == TORSION

    def _parts(self, u):
        s, c = self.slope.to(u), self.center.to(u)
        su = s * u
        # each branch on values that are finite for every kind, then select
        r = c * torch.exp(torch.where(self._bond, su, torch.zeros_like(su)))
        a_logit = torch.logit(torch.where(self._angle, c / math.pi, torch.full_like(c, 0.5))) + su
        theta = math.pi * torch.sigmoid(a_logit)
        full = self.fold == 1
        w = (2 * math.pi) / self.fold.to(u)
        phi = torch.where(full, c + (w / math.pi) * torch.atan(su), c + w * (torch.special.ndtr(su) - 0.5))
        y = torch.where(self._bond, r, torch.where(self._angle, theta, phi))
        ladj_b = torch.log(s * c.abs().clamp_min(1e-30)) + su
        ladj_a = math.log(math.pi) + torch.log(s) + torch.nn.functional.logsigmoid(a_logit) + \
            torch.nn.functional.logsigmoid(-a_logit)
        ladj_t = torch.where(full, torch.log(w * s / math.pi) - torch.log1p(su * su),
                             torch.log(w * s) - 0.5 * su * su - 0.5 * math.log(2 * math.pi))
        ladj = torch.where(self._bond, ladj_b, torch.where(self._angle, ladj_a, ladj_t))
        return y, ladj

    def _call(self, u):
        return self._parts(u)[0]

    def call_and_ladj(self, u):
        y, ladj = self._parts(u)
        return y, ladj.sum(-1)

    def _inverse(self, y):
        s, c = self.slope.to(y), self.center.to(y)
        one = torch.ones_like(y)
        ub = torch.log(torch.where(self._bond, y / c.abs().clamp_min(1e-30), one)) / s
        ua = (torch.logit(torch.where(self._angle, y / math.pi, 0.5 * one)) -
              torch.logit(torch.where(self._angle, c / math.pi, 0.5 * one))) / s
        full = self.fold == 1
        w = (2 * math.pi) / self.fold.to(y)
        # (-w/2, w/2): a methyl torsion in another of its three wells is read as the equivalent one in the
        # window (the same structure with the hydrogens relabelled)
        d = torch.remainder(y - c + 0.5 * w, w) - 0.5 * w
        d = torch.where(self._tors, d, torch.zeros_like(d))
        frac = d / w
        # the tail nearer to the edge, for precision: Phi^-1(1/2 + f) = -Phi^-1(1/2 - f), and 1/2 - f is exact there
        probit = torch.where(frac < 0, torch.special.ndtri(0.5 + frac), -torch.special.ndtri(0.5 - frac))
        ut = torch.where(full, torch.tan(d * math.pi / w), probit) / s
        return torch.where(self._bond, ub, torch.where(self._angle, ua, ut))

    @property
    def inv(self):
        return _Inverse(self)


def compose(*transforms):
    """``call_and_ladj`` of several transforms applied left to right: ``(y, sum of ladj)``."""
    class _Chain(_VectorTransform):
        def _call(self, x):
            for t in transforms:
                x = t(x)
            return x

        def _inverse(self, y):
            for t in reversed(transforms):
                y = t.inv(y)
            return y

        def call_and_ladj(self, x):
            total = 0.0
            for t in transforms:
                x, ladj = t.call_and_ladj(x)
                total = total + ladj
            return x, total

        @property
        def inv(self):
            return _Inverse(self)

    return _Chain()
