"""Smooth tabulated functions of 1 to 3 CG coordinates: cubic interpolation on a regular grid.

Some terms of the latent Hamiltonian are fixed functions of Q once a model is
built: the data-support prior, a kernel-smoothed effective mass A(Q).  Evaluated
directly they cost a sum over hundreds of kernel centres per walker and step;
tabulated once on a fine regular grid they cost a gather of ``4^d`` table
entries and a few polynomial weights, whatever the function was.
:class:`GridInterpolant` holds such a table and evaluates it, with exact
derivatives, for a batch of walkers.

Grid and coordinates
--------------------
Each of the ``n_dim <= 3`` coordinates is either

* **periodic** on ``[lo, hi)`` (default ``[-pi, pi)``, a dihedral in rad):
  ``n`` points ``x_k = lo + k (hi - lo) / n``, ``k = 0 .. n-1``; any Q is
  wrapped, and the interpolant, its gradient and its second derivative
  (B-spline) are continuous across ``hi == lo``;
* **bounded** on ``[lo, hi]``: ``n`` points ``x_k = lo + k (hi - lo) / (n - 1)``
  including both ends.  Outside the box the interpolant is continued with a
  continuous first derivative (second derivative jumps at the box edge), per
  coordinate: ``extrapolation="linear"`` continues the boundary value along
  the boundary slope (finite, unbounded: the right choice for a potential that
  walls take over outside the data range); ``extrapolation="constant"``
  continues it along the slope for about one grid spacing and then levels off
  (``f(hi) + f'(hi) dx tanh((x - hi) / dx)``; bounded: the choice for an
  effective mass).  In a corner outside in several coordinates the
  continuation is the tensor product of these 1-D continuations.

Methods
-------
``method="bspline"`` (default): the interpolating cubic B-spline.  The
table holds B-spline coefficients ``c`` computed once so that the spline
passes through every sample (prefilter: a circulant system solved by FFT for
periodic coordinates; for bounded ones the ``(n + 2)`` banded system of the
``n`` interpolation conditions plus the not-a-knot conditions at both ends,
which keep fourth order up to the boundary).  C2 everywhere; error
``O(dx^4)`` in values and ``O(dx^3)`` in first derivatives for smooth
functions.  ``method="catmull-rom"``: the cubic Catmull-Rom (cardinal)
spline through the samples, no prefilter (bounded ends padded by cubic
extrapolation); C1; error ``O(dx^3)`` / ``O(dx^2)``.  Both cost the same per
evaluation (the same ``4^d`` gather and a 4x4 weight polynomial per
coordinate), so the B-spline's one-off prefilter buys an order of accuracy and
a continuous second derivative for nothing at run time; ``docs/interpolation.md``
gives the measured errors and times.  An *approximating* (not prefiltered)
B-spline of the samples would be a convex combination of them inside the box
but only ``O(dx^2)`` accurate; it is not offered.

Positive-definite matrices
--------------------------
An interpolating spline of symmetric positive-definite samples is symmetric
but can in principle lose positivity between grid points (its weights take
both signs).  With ``positive_definite=True`` the table holds instead the
Cholesky factor ``A = L L^T`` of the samples, with ``ln L_ii`` on the diagonal
and ``L_ij`` (i > j) below it; the interpolant returns ``L(Q) L(Q)^T`` with
``L_ii = exp(.) > 0``, which is symmetric positive definite at every Q,
extrapolation included, whatever the interpolated numbers are.

Grid size
---------
The error of a table is set by the grid spacing relative to the length over
which the function changes (a kernel bandwidth, for the data-derived
functions): for a Gaussian of width sigma the B-spline's largest error is
1e-4, 1.3e-5 and 8e-7 of the peak with 3, 5 and 10 points per sigma (the
gradient's 1.5e-3, 3e-4 and 4e-5 of its largest value).  :data:`DEFAULT_POINTS` (2048, 256, 48
points per coordinate in 1, 2, 3 dimensions) resolve the support prior and the
kernel mass of the built-in systems to better than 1e-4 kT and 1e-5 relative
on the data (docs/interpolation.md); the evaluation cost hardly depends on the
size, the memory and the one-off tabulation grow as its ``d``-th power.

Derivatives
-----------
:meth:`GridInterpolant.value_and_jacobian` (and :meth:`~GridInterpolant.value_and_grad`
for scalars) return values and exact derivatives w.r.t. Q in one call;
:meth:`~GridInterpolant.logdet_and_grad` gives ``ln det A`` of a positive-definite
table and its gradient from the diagonal channels alone.
Calling the interpolant returns values that torch differentiates in reverse
mode (``torch.autograd.grad``) and forward mode (``torch.autograd.forward_ad``)
through an analytic rule; reverse-over-reverse second derivatives
(``create_graph=True``, e.g. a Hessian) are exact as well, forward-over-forward ones are not provided.

Units: Q in the units of each coordinate (nm, rad, 1); values in the units of
the tabulated function; derivatives in value units per unit of each Q.

References
----------
Unser, "Splines: a perfect fit for signal and image processing", IEEE Signal
Process. Mag. 16(6), 22 (1999): cubic B-spline interpolation by prefiltering.
de Boor, A Practical Guide to Splines (Springer 1978/2001): not-a-knot end conditions, error orders.
Keys, IEEE Trans. Acoust. Speech Signal Process. 29, 1153 (1981): cubic convolution (Catmull-Rom), O(dx^3).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from latentlab.validation import as_tensor, fail

#: Default grid points per coordinate by number of coordinates (see docs/interpolation.md for the measurements).
DEFAULT_POINTS = {1: 2048, 2: 256, 3: 48}

METHODS = ("bspline", "catmull-rom")
EXTRAPOLATIONS = ("linear", "constant")

#: Weight polynomials ``w_j(t) = sum_p BASIS[j, p] t^p`` of the four neighbours ``k-1, k, k+1, k+2`` of a
#: point at fraction ``t`` of the cell ``[x_k, x_k+1]``.
_BASIS = {
    "bspline": [[1.0, -3.0, 3.0, -1.0], [4.0, 0.0, -6.0, 3.0], [1.0, 3.0, 3.0, -3.0], [0.0, 0.0, 0.0, 1.0]],
    "catmull-rom": [[0.0, -1.0, 2.0, -1.0], [2.0, 0.0, -5.0, 3.0], [0.0, 1.0, 4.0, -3.0], [0.0, 0.0, -1.0, 1.0]],
}
_BASIS_SCALE = {"bspline": 1.0 / 6.0, "catmull-rom": 0.5}

FORMAT = "latentlab-grid-interpolant"
FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- grid set-up
def _box(bounds, periodic, n_dim: int | None = None):
    """Validated ``(lo, hi, periodic)`` lists from per-coordinate bounds and periodicity flags."""
    if periodic is None:
        if bounds is None:
            fail("bounds", "neither bounds nor periodic was given", "give (lo, hi) per coordinate and/or periodic flags")
        periodic = [False] * len(bounds)
    per = [bool(p) for p in periodic]
    n = len(per) if n_dim is None else int(n_dim)
    if not 1 <= n <= 3:
        fail("periodic", f"describes {n} coordinates", "tabulate functions of 1, 2 or 3 coordinates "
             "(a 4-D table needs 4^4 = 256 neighbours per point; use the direct function instead)")
    if len(per) != n:
        fail("periodic", f"has {len(per)} flags for {n} coordinates", "give one flag per coordinate")
    bnd = [None] * n if bounds is None else list(bounds)
    if len(bnd) != n:
        fail("bounds", f"has {len(bnd)} entries for {n} coordinates", "give one (lo, hi) (or None if periodic) per coordinate")
    lo, hi = [], []
    for d, (b, p) in enumerate(zip(bnd, per)):
        if b is None:
            if not p:
                fail("bounds", f"coordinate {d} is bounded but has no (lo, hi)", "give the box of the table, e.g. the data range")
            b = (-math.pi, math.pi)
        a, z = float(b[0]), float(b[1])
        if not (math.isfinite(a) and math.isfinite(z) and a < z):
            fail("bounds", f"coordinate {d} has the box ({a}, {z})", "give finite lo < hi (a table covers a finite box)")
        lo.append(a)
        hi.append(z)
    return lo, hi, per


def _point_counts(n_points, n_dim: int) -> list[int]:
    if n_points is None:
        return [DEFAULT_POINTS[n_dim]] * n_dim
    counts = [int(n_points)] * n_dim if np.ndim(n_points) == 0 else [int(v) for v in n_points]
    if len(counts) != n_dim:
        fail("n_points", f"has {len(counts)} entries for {n_dim} coordinates", "give one count or one per coordinate")
    if min(counts) < 4:
        fail("n_points", f"got {counts}", "use at least 4 grid points per coordinate (a cubic needs 4)")
    return counts


def grid_points(bounds, periodic, n_points, dtype=torch.float64, device=None) -> list[torch.Tensor]:
    """The grid coordinates of each dimension (see the module docstring for their placement).

    Parameters
    ----------
    bounds : sequence of (lo, hi) or None, one per coordinate
        Box of the table; None (periodic coordinates only) means ``(-pi, pi)``.
    periodic : sequence of bool
    n_points : int or sequence of int

    Returns
    -------
    list of torch.Tensor, each shape=(n_points_d,)
    """
    lo, hi, per = _box(bounds, periodic)
    counts = _point_counts(n_points, len(per))
    out = []
    for a, z, p, n in zip(lo, hi, per, counts):
        k = torch.arange(n, dtype=torch.float64)
        out.append((a + k * ((z - a) / n if p else (z - a) / (n - 1))).to(dtype=dtype, device=device))
    return out


# ---------------------------------------------------------------------------- prefilters (float64, once)
def _prefilter_periodic(f: torch.Tensor, method: str) -> torch.Tensor:
    """Coefficients ``c_-1 .. c_n+1`` (axis 0, length n + 3) of the periodic spline through ``f`` (axis 0)."""
    n = f.shape[0]
    if method == "bspline":  # (c_k-1 + 4 c_k + c_k+1) / 6 = f_k, circulant: divide by its eigenvalues
        lam = (4.0 + 2.0 * torch.cos(2.0 * math.pi * torch.arange(n // 2 + 1, dtype=f.dtype) / n)) / 6.0
        shape = (-1,) + (1,) * (f.dim() - 1)
        f = torch.fft.irfft(torch.fft.rfft(f, dim=0) / lam.reshape(shape), n=n, dim=0)
    return torch.cat([f[-1:], f, f[:2]], dim=0)


def _not_a_knot_matrix(n: int) -> np.ndarray:
    """Banded form (4 sub-, 4 super-diagonals) of the (n + 2) x (n + 2) interpolation + not-a-knot system."""
    full = np.zeros((n + 2, n + 2))
    fourth = [1.0, -4.0, 6.0, -4.0, 1.0]  # third derivative continuous at x_1 / x_n-2
    full[0, 0:5] = fourth
    full[n + 1, n - 3:n + 2] = fourth
    for k in range(n):  # row k + 1: c_k-1 + 4 c_k + c_k+1 = 6 f_k (coefficient c_j in column j + 1)
        full[k + 1, k:k + 3] = [1.0, 4.0, 1.0]
    ab = np.zeros((9, n + 2))
    for i in range(n + 2):
        for j in range(max(0, i - 4), min(n + 2, i + 5)):
            ab[4 + i - j, j] = full[i, j]
    return ab


def _prefilter_bounded(f: torch.Tensor, method: str) -> torch.Tensor:
    """Coefficients ``c_-1 .. c_n`` (axis 0, length n + 2) of the bounded spline through ``f`` (axis 0)."""
    n = f.shape[0]
    if method == "catmull-rom":  # pad with the cubic extrapolation (zero fourth difference)
        first = 4.0 * f[0] - 6.0 * f[1] + 4.0 * f[2] - f[3]
        last = 4.0 * f[-1] - 6.0 * f[-2] + 4.0 * f[-3] - f[-4]
        return torch.cat([first[None], f, last[None]], dim=0)
    from scipy.linalg import solve_banded

    rhs = np.zeros((n + 2,) + tuple(f.shape[1:]))
    rhs[1:n + 1] = 6.0 * f.detach().cpu().numpy()
    c = solve_banded((4, 4), _not_a_knot_matrix(n), rhs.reshape(n + 2, -1))
    return torch.as_tensor(c.reshape(rhs.shape), dtype=f.dtype)


def _coefficients(samples: torch.Tensor, periodic: list[bool], method: str) -> torch.Tensor:
    """Padded coefficient table ``(P_0, .., P_d-1, C)`` from samples ``(n_0, .., n_d-1, C)`` (float64)."""
    c = samples
    for d, p in enumerate(periodic):
        moved = c.movedim(d, 0)
        moved = _prefilter_periodic(moved, method) if p else _prefilter_bounded(moved, method)
        c = moved.movedim(0, d)
    return c.contiguous()


# ---------------------------------------------------------------------------- evaluation core
def _cells(Q, tables: dict):
    """Cell ``(W, D)`` (as floats), the fraction ``t`` of it at ``Q`` (``(W, D)``; outside [0, 1] beyond a bounded
    box) and the row index of its ``4^(D-1)`` table rows ``(W, 4^(D-1))``.  A NaN Q gets cell 0 and a NaN t."""
    u = torch.addcmul(tables["shift"], Q, tables["inv_h"])  # (Q - lo) / h, in grid spacings from lo
    if tables["any_periodic"]:
        wrapped = torch.remainder(u, tables["n"])
        u = torch.where(tables["periodic"], wrapped, u) if tables["any_bounded"] else wrapped
    cell = torch.clamp(torch.floor(u), tables["zero"], tables["last_cell"]).nan_to_num_(nan=0.0)
    if tables["stride_f"] is not None:  # the row index as one product (exact: every index is below 2^mantissa)
        idx = torch.addmm(tables["offsets_f"], cell, tables["stride_f"]).long()
    else:
        idx = (cell.long() * tables["stride"]).sum(-1, keepdim=True) + tables["offsets"]
    return cell, u - cell, idx


def _axis_weights(t, tables: dict, derivatives: bool):
    """Neighbour weights ``(W, D, 4)`` at the cell fractions ``t (W, D)`` and, with ``derivatives``, their
    Q-derivatives ``(W, D, 4)`` (else None)."""
    bounded = tables["any_bounded"]
    tc = t.clamp(0.0, 1.0) if bounded else t  # inside the box t == tc
    if not (derivatives or bounded):  # values only: the weights alone, by Horner's scheme (3 multiply-adds)
        b3, b2, b1, b0 = tables["horner"]  # (4,) each: the weights' coefficients of t^3, t^2, t, 1
        t1 = t[..., None]
        return torch.addcmul(b0, torch.addcmul(b1, torch.addcmul(b2, b3, t1), t1), t1), None
    powers = torch.linalg.vander(tc, N=4)  # (W, D, 4): 1, t, t^2, t^3
    both = powers @ tables["basis"]  # (W, D, 8): weights w_j(tc), then d w_j / d t
    w, dw = both[..., :4], both[..., 4:]
    if bounded:  # continuation outside the box: w(tc) + w'(tc) g(t - tc), C1 at the edge
        s = t - tc
        g = torch.tanh(s) if tables["constant"] else s
        w = torch.addcmul(w, dw, g[..., None])
        if derivatives and tables["constant"]:
            dw = dw * (1.0 - g * g)[..., None]
    return w, (dw * tables["inv_h"][:, None] if derivatives else None)


def _evaluate(tables: dict, Q: torch.Tensor, cells: "TableCells | None" = None):
    """Raw table values ``(W, C)`` and their Q-derivatives ``(W, C, D)`` (``cells``: the walkers' cells, found
    near Q before, see :class:`TableCells`; else found here).

    The table rows hold the 4 consecutive coefficients along the last coordinate (``(C, 4)`` each),
    so one walker gathers ``4^(D-1)`` rows; the coordinates are then contracted one at a time
    with the weights and their derivatives (``k = 2`` columns: value, d/dQ_d), each a batched
    matrix product (the leading coordinates from the left, the last one from the right).  Of the
    ``2^D`` combinations the ones with at most one derivative are kept.
    """
    n_walkers, n_dim = Q.shape
    n_channels = tables["rows"].shape[1] // 4
    if n_walkers == 0:
        return Q.new_zeros(0, n_channels), Q.new_zeros(0, n_channels, n_dim)
    if cells is None:
        _, t, idx = _cells(Q, tables)
        x = tables["rows"].index_select(0, idx.reshape(-1))  # (W 4^(D-1), 4 C)
    else:
        t, x = cells.fractions(Q), cells.rows
        left = (t - 0.5).abs().amax(1) > tables["cell_slack"]  # (W,): walkers further than the slack out of their cell
        if bool(left.any()):  # their own cells (the continued cubic's derivative could be off by more than allowed)
            i = torch.nonzero(left).flatten()
            _, t_i, idx = _cells(Q[i], tables)
            r = x.shape[0] // n_walkers
            t = t.index_put((i,), t_i)
            x = x.view(n_walkers, r, -1).index_put((i,), tables["rows"].index_select(0, idx.view(-1)).view(-1, r, x.shape[1]))
            x = x.view(n_walkers * r, -1)
    w, dw = _axis_weights(t, tables, derivatives=True)
    K = torch.stack([w, dw], dim=-1)  # (W, D, 4, 2)
    for d in range(n_dim - 1):  # x: (W 2^d, 4, rest) -> (W 2^d, 2, rest / 4)
        Kd = K[:, d].transpose(1, 2)  # (W, 2, 4)
        if d:
            Kd = Kd.repeat_interleave(2**d, dim=0)
        x = torch.bmm(Kd, x.reshape(n_walkers * 2**d, 4, -1))
    x = torch.bmm(x.reshape(n_walkers, -1, 4), K[:, -1])  # (W, 2^(D-1) C, 2)
    x = x.reshape(n_walkers, 2 ** (n_dim - 1), n_channels, 2)
    cols = [x[:, 2 ** (n_dim - 2 - d), :, 0] for d in range(n_dim - 1)] + [x[:, 0, :, 1]]
    return x[:, 0, :, 0], torch.stack(cols, dim=-1)


def _values(tables: dict, Q: torch.Tensor) -> torch.Tensor:
    """Raw table values ``(W, C)`` at ``Q (W, D)``: :func:`_evaluate` without derivatives (one weight column,
    about half its batched operations; each costs microseconds of dispatch whatever its size, which at a
    thousand walkers is most of a lookup's time)."""
    if Q.shape[0] == 0:
        return Q.new_zeros(0, tables["rows"].shape[1] // 4)
    _, t, idx = _cells(Q, tables)
    return _contract(tables, t, tables["rows"].index_select(0, idx.view(-1)))  # rows: (W 4^(D-1), 4 C)


def _contract(tables: dict, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Raw values ``(W, C)`` at the cell fractions ``t (W, D)`` from each walker's gathered rows
    ``(W 4^(D-1), 4 C)``: the weights of each coordinate contracted in turn."""
    n_walkers, n_dim = t.shape
    n_channels = rows.shape[1] // 4
    w, _ = _axis_weights(t, tables, derivatives=False)  # (W, D, 4)
    x = rows
    for d in range(n_dim - 1):  # the leading coordinates: (W, 4, rest) -> (W, rest / 4), as 4 multiply-adds
        # (a bmm of a thousand 1 x 4 by 4 x rest products costs 2-3x more on a CPU)
        x4, wd = x.view(n_walkers, 4, -1), w[:, d, :, None]  # (W, 4, rest), (W, 4, 1)
        x = x4[:, 0] * wd[:, 0]
        for k in range(1, 4):
            x = torch.addcmul(x, x4[:, k], wd[:, k])
    return torch.bmm(x.view(n_walkers, n_channels, 4), w[:, n_dim - 1, :, None]).view(n_walkers, n_channels)


class TableCells:
    """The table cells of a batch of points ``Q (W, D)``: each walker's cell fraction ``t (W, D)`` and its
    ``4^(D-1)`` gathered table rows ``(W 4^(D-1), 4 C)``, kept so that a point near Q is evaluated on the same
    cell without finding and gathering it again (a fixed point's iterates, then its solution).

    At ``Q'`` the fraction is ``t + (Q' - Q) / h`` (the coordinates periodic and not wrapped: Q' is a continuous move
    from Q): exactly the table while Q' stays in the cell.  A point that has left it by ``s`` cells gets the cell's
    cubic continued, within ``M s^3 / 6`` of the table and ``M s^2 / 2 / h`` in its derivative (C2 B-splines; M the
    largest 4th difference of the coefficients).  :meth:`values` (a fixed point's iterates) uses it as it is: the
    sampler's iterates stay within 0.01 of a cell of the first (alanine dipeptide's model, 300 steps of 1024
    walkers; M = 0.006), so an iterate's A is within 1e-9 of the table even past a cell edge, which moves the
    solution by about 1e-11, a thousandth of its tolerance.  ``GridInterpolant.value_and_jacobian(Q, cells)``
    (A and dA/dQ at the solution) evaluates a walker further out of its cell than a derivative error of
    ``DERIVATIVE_ERROR`` allows on its own cell (18 of 307,200 walker-steps there).
    """

    #: Largest difference between the derivative of a continued cell and the table's, in the raw channels per Q unit.
    DERIVATIVE_ERROR = 1e-12

    def __init__(self, table: "GridInterpolant", tables: dict, Q: torch.Tensor, t: torch.Tensor, rows: torch.Tensor):
        self._table, self._tables, self.Q, self.t, self.rows = table, tables, Q, t, rows

    def fractions(self, Q: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Cell fractions ``(W, D)`` of the points ``Q (W, D)`` in the kept cells (of the walkers ``idx``, if given)."""
        t, q0 = (self.t, self.Q) if idx is None else (self.t[idx], self.Q[idx])
        return torch.addcmul(t, Q - q0, self._tables["inv_h"])

    def values(self, Q: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The table's values ``(len(idx),) + value_shape`` at ``Q (len(idx), D)``, points near those of the walkers
        ``idx`` (a long tensor), on their kept cells."""
        w = self.Q.shape[0]
        rows = self.rows.view(w, self.rows.shape[0] // w, -1)[idx].view(-1, self.rows.shape[1])
        return self._table._finish(_contract(self._tables, self.fractions(Q, idx), rows), self._tables)


class _TableFunction(torch.autograd.Function):
    """Raw table values ``(W, C)`` with the analytic first derivative for reverse and forward mode.

    Under ``create_graph=True`` the backward rebuilds the derivative with differentiable torch ops,
    so reverse-over-reverse second derivatives (a Hessian of V) are exact too.
    """

    @staticmethod
    def forward(ctx, Q, tables):
        value, jac = _evaluate(tables, Q)
        ctx.save_for_backward(Q)
        ctx.tables, ctx.jac = tables, jac  # (W, C, D)
        return value.clone()  # not a view of jac's storage (forward AD refuses views as outputs)

    @staticmethod
    def backward(ctx, grad_value):
        jac = ctx.jac
        if torch.is_grad_enabled():  # create_graph: the derivative as a differentiable function of Q
            (Q,) = ctx.saved_tensors
            _, jac = _evaluate(ctx.tables, Q)
        return torch.einsum("wc,wcd->wd", grad_value, jac), None

    @staticmethod
    def jvp(ctx, tangent_Q, _):
        return torch.einsum("wcd,wd->wc", ctx.jac, tangent_Q)


def _is_dual(Q: torch.Tensor) -> bool:
    import torch.autograd.forward_ad as fwAD

    return fwAD.unpack_dual(Q).tangent is not None


# ---------------------------------------------------------------------------- the interpolant
class GridInterpolant(torch.nn.Module):
    """A scalar, vector or matrix function of ``Q (n_walkers, n_dim)`` tabulated on a regular grid.

    Build one with :meth:`from_function` (evaluates a callable on the grid),
    :meth:`from_samples` (values already on the grid, see :func:`grid_points`)
    or :meth:`from_dict` (a stored table); the constructor takes the internal
    representation.  The table is a module buffer (``.to(device)`` moves it);
    evaluation runs in the dtype and on the device of ``Q`` (the table is cast
    once per dtype/device and cached).

    Parameters
    ----------
    coefficients : torch.Tensor, shape=(P_0, .., P_d-1, C)
        Padded spline coefficients (``P = n + 3`` periodic, ``n + 2`` bounded).
    bounds : sequence of (lo, hi) or None
        Box per coordinate (None: periodic ``(-pi, pi)``).
    periodic : sequence of bool
    n_points : sequence of int
        Grid points per coordinate.
    value_shape : tuple of int
        Shape of one value: ``()`` scalar, ``(N, N)`` matrix, ...
    method : {"bspline", "catmull-rom"}
    extrapolation : {"linear", "constant"}
        Continuation outside the box along bounded coordinates (module docstring).
    positive_definite : bool
        The table holds a Cholesky factor (log diagonal); values are ``L L^T``.
    """

    def __init__(self, coefficients: torch.Tensor, bounds, periodic, n_points, value_shape=(), *,
                 method: str = "bspline", extrapolation: str = "linear", positive_definite: bool = False):
        super().__init__()
        lo, hi, per = _box(bounds, periodic)
        counts = _point_counts(n_points, len(per))
        if method not in METHODS:
            fail("method", f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
        if extrapolation not in EXTRAPOLATIONS:
            fail("extrapolation", f"unknown extrapolation {extrapolation!r}", f"use one of {', '.join(EXTRAPOLATIONS)}")
        self.n_dim, self.method, self.extrapolation = len(per), method, extrapolation
        self.periodic, self.n_points = per, counts
        self.bounds = [(a, z) for a, z in zip(lo, hi)]
        self.value_shape = tuple(int(v) for v in value_shape)
        self.positive_definite = bool(positive_definite)
        n_channels = int(np.prod(self.value_shape, dtype=np.int64))
        if self.positive_definite:
            if len(self.value_shape) != 2 or self.value_shape[0] != self.value_shape[1]:
                fail("value_shape", f"got {self.value_shape} with positive_definite=True", "tabulate square (N, N) matrices")
            n = self.value_shape[0]
            n_channels = n * (n + 1) // 2
        padded = [c + (3 if p else 2) for c, p in zip(counts, per)]
        coefficients = as_tensor(coefficients, "coefficients")
        if tuple(coefficients.shape) != tuple(padded) + (n_channels,):
            fail("coefficients", f"has shape {tuple(coefficients.shape)}, expected {tuple(padded) + (n_channels,)}",
                 "build the table with GridInterpolant.from_samples or from_function")
        self.register_buffer("coefficients", coefficients.contiguous())
        self._cache: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_samples(cls, values, bounds, periodic, *, method: str = "bspline", extrapolation: str = "linear",
                     positive_definite: bool = False, dtype=torch.float64) -> "GridInterpolant":
        """The interpolant through samples on the grid of :func:`grid_points`.

        Parameters
        ----------
        values : array, shape=(n_0, .., n_d-1) + value_shape
            The function at the grid points (``d = len(periodic)``); any finite numbers; with
            ``positive_definite`` symmetric positive-definite ``(N, N)`` matrices.
        bounds, periodic : see :func:`grid_points`.
        method, extrapolation, positive_definite : see :class:`GridInterpolant`.
        dtype : torch dtype of the stored table (the prefilter always runs in float64).
        """
        lo, hi, per = _box(bounds, periodic)
        d = len(per)
        v = as_tensor(values, "values", dtype=torch.float64, device="cpu")
        if v.dim() < d:
            fail("values", f"has shape {tuple(v.shape)} for a {d}-D grid", "give values of shape grid + value_shape")
        counts, value_shape = list(v.shape[:d]), tuple(v.shape[d:])
        _point_counts(counts, d)
        if not bool(torch.isfinite(v).all()):
            fail("values", f"has {int((~torch.isfinite(v)).sum())} NaN or infinite entries",
                 "tabulate a function that is finite on the whole box (or shrink the box)")
        if positive_definite:
            v = _cholesky_channels(v, value_shape)
        flat = v.reshape(counts + [-1])
        coef = _coefficients(flat, per, method).to(dtype)
        return cls(coef, list(zip(lo, hi)), per, counts, value_shape, method=method, extrapolation=extrapolation,
                   positive_definite=positive_definite)

    @classmethod
    def from_function(cls, function: Callable[[torch.Tensor], torch.Tensor], bounds, periodic, n_points=None, *,
                      chunk_size: int = 16384, progress: bool = False, device=None, **kwargs) -> "GridInterpolant":
        """Tabulate ``function`` on the grid and build the interpolant through it.

        Parameters
        ----------
        function : callable, (n_points, n_dim) -> (n_points,) + value_shape
            Batched torch function of Q (float64, on ``device``), e.g. a kernel density or ``KernelMass``;
            evaluated without gradients in chunks of ``chunk_size`` points.
        bounds, periodic : see :func:`grid_points`.
        n_points : int or sequence of int, optional
            Grid points per coordinate (default :data:`DEFAULT_POINTS` by dimension).
        chunk_size : int
            Points per call of ``function`` (bounds its memory).
        progress : bool
            Show a progress bar (tqdm).
        device : torch device, optional
            Where ``function`` is evaluated (default CPU); the table is built on the CPU.
        **kwargs
            ``method``, ``extrapolation``, ``positive_definite``, ``dtype``: see :meth:`from_samples`.
        """
        lo, hi, per = _box(bounds, periodic)
        axes = grid_points(list(zip(lo, hi)), per, _point_counts(n_points, len(per)))
        if int(chunk_size) < 1:
            fail("chunk_size", f"got {chunk_size}", "use a positive number of points per call")
        points = torch.cartesian_prod(*axes).reshape(-1, len(axes))  # (n_total, D), first coordinate slowest
        chunks = []
        starts = range(0, points.shape[0], int(chunk_size))
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, unit="chunk", desc="tabulating")
        with torch.no_grad():
            for start in starts:
                out = function(points[start:start + int(chunk_size)].to(device))
                out = torch.as_tensor(out).detach().to(dtype=torch.float64, device="cpu")
                if out.dim() < 1 or out.shape[0] != min(int(chunk_size), points.shape[0] - start):
                    fail("function", f"returned shape {tuple(out.shape)} for {points[start:start + int(chunk_size)].shape[0]} points",
                         "return one value (scalar, vector or matrix) per point along the first axis")
                chunks.append(out)
        values = torch.cat(chunks).reshape([a.shape[0] for a in axes] + list(chunks[0].shape[1:]))
        return cls.from_samples(values, list(zip(lo, hi)), per, **kwargs)

    def to_dict(self) -> dict:
        """Plain tensors, strings, numbers and lists (loadable with ``torch.load(weights_only=True)``)."""
        return {"format": FORMAT, "version": FORMAT_VERSION, "coefficients": self.coefficients.detach().cpu().clone(),
                "bounds": [list(b) for b in self.bounds], "periodic": list(self.periodic),
                "n_points": list(self.n_points), "value_shape": list(self.value_shape), "method": self.method,
                "extrapolation": self.extrapolation, "positive_definite": self.positive_definite}

    @classmethod
    def from_dict(cls, d: dict) -> "GridInterpolant":
        """Rebuild from :meth:`to_dict` output."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            fail("table", "is not a stored grid interpolant", "pass the dictionary written by GridInterpolant.to_dict")
        if int(d.get("version", -1)) > FORMAT_VERSION:
            fail("table", f"has format version {d['version']} (this latentlab reads up to {FORMAT_VERSION})",
                 "upgrade latentlab")
        return cls(d["coefficients"], d["bounds"], d["periodic"], d["n_points"], tuple(d["value_shape"]),
                   method=d["method"], extrapolation=d["extrapolation"], positive_definite=d["positive_definite"])

    # ------------------------------------------------------------------ evaluation
    def _apply(self, fn, *args, **kwargs):  # .to(), .double(), ... invalidate the cast tables
        self._cache = {}
        return super()._apply(fn, *args, **kwargs)

    def _tables(self, Q: torch.Tensor) -> dict:
        stamp = (self.coefficients.data_ptr(), self.coefficients._version)  # in-place changes (load_state_dict)
        if self._cache.get("stamp") != stamp:
            self._cache = {"stamp": stamp}
        key = (Q.dtype, Q.device)
        if key not in self._cache:
            dt, dev = Q.dtype, Q.device
            d = self.n_dim
            lo = torch.tensor([b[0] for b in self.bounds], dtype=torch.float64)
            width = torch.tensor([b[1] - b[0] for b in self.bounds], dtype=torch.float64)
            n = torch.tensor(self.n_points, dtype=torch.float64)
            per = torch.tensor(self.periodic)
            # rows: the 4 coefficients along the last coordinate from each node, (P_0, .., P_D-1 - 3, C, 4)
            rows = self.coefficients.detach().unfold(d - 1, 4, 1)
            stride = torch.tensor([int(np.prod(rows.shape[k + 1:d], dtype=np.int64)) for k in range(d)])
            ks = torch.cartesian_prod(*[torch.arange(4)] * (d - 1), torch.zeros(1, dtype=torch.long)).reshape(-1, d)
            basis = torch.tensor(_BASIS[self.method], dtype=torch.float64) * _BASIS_SCALE[self.method]  # (4, 4)
            dbasis = torch.zeros(4, 4, dtype=torch.float64)
            dbasis[:, :3] = basis[:, 1:] * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
            exact_index = rows[..., 0, 0].numel() <= 2.0 / torch.finfo(dt).eps  # 2^24 in float32, 2^53 in float64
            slack = self._cell_slack() if self.keeps_cells else None
            self._cache[key] = {
                "rows": rows.to(dtype=dt, device=dev).reshape(-1, 4 * self.coefficients.shape[-1]),
                "inv_h": (torch.where(per, n, n - 1) / width).to(dtype=dt, device=dev),
                "n": n.to(dtype=dt, device=dev), "periodic": per.to(dev),
                "last_cell": torch.where(per, n - 1, n - 2).to(dtype=dt, device=dev),
                "any_periodic": any(self.periodic), "any_bounded": not all(self.periodic),
                "basis": torch.cat([basis.T, dbasis.T], dim=1).to(dtype=dt, device=dev),  # (4 powers, 8)
                "horner": tuple(basis[:, p].to(dtype=dt, device=dev) for p in (3, 2, 1, 0)),  # the weights alone
                "constant": self.extrapolation == "constant",
                "stride": stride.to(dev), "offsets": (ks * stride).sum(-1).to(dev),
                # for _cells: -lo / h, the lower cell bound, and the row strides as floats (one column per row a
                # walker gathers) where every row index is an exact float of this dtype (below 2^24 rows in float32,
                # always in float64)
                "shift": (-lo * torch.where(per, n, n - 1) / width).to(dtype=dt, device=dev),
                "zero": torch.zeros(d, dtype=dt, device=dev),
                "stride_f": stride[:, None].expand(d, ks.shape[0]).to(dtype=dt, device=dev) if exact_index else None,
                "offsets_f": (ks * stride).sum(-1).to(dtype=dt, device=dev), "cell_slack": slack}
            if self.positive_definite:  # packed (ln L_ii, L_ij) -> L, row-major
                m = self.value_shape[0]
                r, c = torch.tril_indices(m, m)
                unpack = torch.zeros(r.numel(), m * m, dtype=dt)
                unpack[torch.arange(r.numel()), r * m + c] = 1.0
                # L L^T from the products of packed entries: (L L^T)_ij = sum_k L_ik L_jk, (C C, N N)
                gram = torch.zeros(r.numel(), r.numel(), m, m, dtype=dt)
                for a in range(r.numel()):
                    for b in range(r.numel()):
                        if c[a] == c[b]:  # entries a = (i, k) and b = (j, k) share the column k
                            gram[a, b, r[a], r[b]] = 1.0
                self._cache[key].update({"unpack": unpack.to(dev), "diag": (r == c).to(dev),
                                         "gram": gram.reshape(r.numel() ** 2, m * m).to(dev)})
        return self._cache[key]

    def _check(self, Q) -> torch.Tensor:
        if not isinstance(Q, torch.Tensor) or not Q.is_floating_point():
            Q = as_tensor(Q, "Q", dtype=self.coefficients.dtype)
        if Q.dim() != 2 or Q.shape[1] != self.n_dim:
            fail("Q", f"has shape {tuple(Q.shape)}, expected (n_walkers, {self.n_dim})", "pass CG coordinates")
        return Q

    def forward(self, Q: torch.Tensor) -> torch.Tensor:
        """Values ``(n_walkers,) + value_shape`` at ``Q (n_walkers, n_dim)``; differentiable in reverse and forward mode."""
        Q = self._check(Q)
        tables = self._tables(Q)
        if (torch.is_grad_enabled() and Q.requires_grad) or _is_dual(Q):
            raw = _TableFunction.apply(Q, tables)
        else:
            raw = _values(tables, Q)
        return self._finish(raw, tables)

    def _finish(self, raw: torch.Tensor, tables: dict) -> torch.Tensor:
        """Values ``(W,) + value_shape`` from raw channels ``(W, C)`` (``L L^T`` for a positive-definite table)."""
        if self.positive_definite:
            return _gram(self._entries(raw, tables), tables, self.value_shape[0])
        return raw.reshape((raw.shape[0],) + self.value_shape)

    def _cell_slack(self) -> float:
        """Largest ``|t - 1/2|`` of a walker evaluated on a kept cell (:class:`TableCells`): its cubic continued s
        cells beyond it differs from the table by ``M s^3 / 6`` and in its derivative by ``M s^2 / (2 h)`` (M: the
        largest 4th difference of the coefficients), kept below ``TableCells.DERIVATIVE_ERROR``."""
        c = self.coefficients.detach().to(torch.float64)
        fourth = max(float(c.diff(n=4, dim=k).abs().amax()) if c.shape[k] > 4 else 0.0 for k in range(self.n_dim))
        inv_h = max(n / (b[1] - b[0]) for n, b in zip(self.n_points, self.bounds))  # periodic: n cells
        growth = fourth * inv_h / 2.0
        return 0.5 + (math.sqrt(TableCells.DERIVATIVE_ERROR / growth) if growth > 0 else math.inf)

    @property
    def keeps_cells(self) -> bool:
        """Whether :meth:`value_and_cells` applies: a B-spline (C2, so a cell's cubic continues as the table) on
        periodic coordinates only (a bounded one continues its edge cells linearly beyond the box, which an
        interior cell must not)."""
        return self.method == "bspline" and all(self.periodic)

    def value_and_cells(self, Q: torch.Tensor):
        """Values ``(n_walkers,) + value_shape`` at ``Q (n_walkers, n_dim)`` and the walkers' :class:`TableCells`, for
        values at nearby points without finding the cells again (not tracked by autograd; B-spline tables)."""
        if not self.keeps_cells:
            fail("value_and_cells", f"the table is a {self.method} spline on {'periodic' if all(self.periodic) else 'bounded'}"
                 " coordinates: only a B-spline on periodic ones continues its cells as the table",
                 "use plain lookups")
        Q = self._check(Q)
        tables = self._tables(Q)
        with torch.no_grad():
            Q = Q.detach()
            _, t, idx = _cells(Q, tables)
            cells = TableCells(self, tables, Q, t, tables["rows"].index_select(0, idx.view(-1)))
            return self._finish(_contract(tables, t, cells.rows), tables), cells

    def value_and_jacobian(self, Q: torch.Tensor, cells: TableCells | None = None):
        """Values and exact derivatives in one call (not tracked by autograd).

        Parameters
        ----------
        Q : torch.Tensor, shape=(n_walkers, n_dim)
        cells : TableCells, optional
            The walkers' cells from :meth:`value_and_cells` at points near Q (Q a continuous move from them).

        Returns
        -------
        value : torch.Tensor, shape=(n_walkers,) + value_shape
        jacobian : torch.Tensor, shape=(n_walkers,) + value_shape + (n_dim,)
            ``jacobian[w, ..., k] = d value[w, ...] / d Q[w, k]`` (for an (N, N) mass: ``dA_ij/dQ_k``).
        """
        Q = self._check(Q)
        tables = self._tables(Q)
        with torch.no_grad():
            raw, draw = _evaluate(tables, Q.detach(), cells)  # (W, C), (W, C, D)
            w = Q.shape[0]
            if not self.positive_definite:
                return raw.reshape((w,) + self.value_shape), draw.reshape((w,) + self.value_shape + (self.n_dim,))
            n = self.value_shape[0]
            diag = tables["diag"]
            e = raw.exp()  # L_ii on the diagonal channels (the others are never selected)
            entries = torch.where(diag, e, raw)  # as _entries
            L = (entries @ tables["unpack"]).reshape(w, n, n)  # (W, N, N)
            # d L_ii = L_ii d(ln L_ii); off the diagonal the packed derivative itself
            dpacked = torch.where(diag[:, None], e[:, :, None] * draw, draw)  # (W, C, D)
            dL = (dpacked.transpose(1, 2).reshape(-1, dpacked.shape[1]) @ tables["unpack"]).reshape(w, self.n_dim, n, n)
            dLLt = torch.bmm(dL.reshape(w, -1, n), L.transpose(1, 2)).reshape(w, self.n_dim, n, n)  # dL_d L^T
            dA = dLLt + dLLt.transpose(-1, -2)
            return _gram(entries, tables, n), dA.permute(0, 2, 3, 1)

    def value_and_grad(self, Q: torch.Tensor):
        """Value ``(n_walkers,)`` and gradient ``(n_walkers, n_dim)`` of a scalar table (not tracked by autograd)."""
        if self.value_shape != ():
            fail("value_and_grad", f"the table holds values of shape {self.value_shape}", "use value_and_jacobian")
        return self.value_and_jacobian(Q)

    def logdet_and_grad(self, Q: torch.Tensor):
        """``ln det A(Q)`` ``(n_walkers,)`` and its gradient ``(n_walkers, n_dim)`` of a positive-definite table.

        With ``A = L L^T``, ``ln det A = 2 sum_i ln L_ii``: the sum of the table's diagonal channels,
        so it is exactly the log-determinant of the interpolated A, at the cost of one table lookup.
        """
        if not self.positive_definite:
            fail("logdet_and_grad", "the table does not hold a Cholesky factor",
                 "build it with positive_definite=True (or take torch.logdet of the values)")
        Q = self._check(Q)
        tables = self._tables(Q)
        with torch.no_grad():
            raw, draw = _evaluate(tables, Q.detach())  # (W, C), (W, C, D)
            diag = tables["diag"]
            return 2.0 * raw[:, diag].sum(-1), 2.0 * draw[:, diag].sum(1)

    def jvp(self, Q: torch.Tensor, tangent: torch.Tensor):
        """Value and directional derivative ``sum_k d value / d Q_k tangent_k`` by forward-mode AD.

        Parameters
        ----------
        Q, tangent : torch.Tensor, shape=(n_walkers, n_dim)

        Returns
        -------
        value, derivative : torch.Tensor, shape=(n_walkers,) + value_shape
        """
        import torch.autograd.forward_ad as fwAD

        with fwAD.dual_level():
            out = fwAD.unpack_dual(self(fwAD.make_dual(Q, tangent)))
        return out.primal, out.tangent

    @staticmethod
    def _entries(raw: torch.Tensor, tables: dict) -> torch.Tensor:
        """The packed entries of the lower-triangular L ``(W, C)`` from the channels ``(W, C)``: ``exp`` of the
        diagonal ones."""
        if raw.requires_grad or _is_dual(raw):  # exp of the diagonal channels only: no inf, hence no NaN gradient
            return torch.where(tables["diag"], _exp_diagonal(raw, tables["diag"]), raw)
        return torch.where(tables["diag"], raw.exp(), raw)  # an inf of an off-diagonal channel is never selected

    def extra_repr(self) -> str:
        kinds = ["periodic" if p else "bounded" for p in self.periodic]
        return (f"n_dim={self.n_dim}, n_points={self.n_points}, {kinds}, value_shape={self.value_shape}, "
                f"method={self.method!r}, extrapolation={self.extrapolation!r}, positive_definite={self.positive_definite}")


def _exp_diagonal(raw: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """``exp`` of the diagonal channels and 1 elsewhere (no overflow, hence no NaN gradient, off the diagonal)."""
    return torch.exp(torch.where(diag, raw, torch.zeros_like(raw)))


def _gram(entries: torch.Tensor, tables: dict, n: int) -> torch.Tensor:
    """``L L^T (W, N, N)`` from the packed entries of L ``(W, C)``: their products ``(W, C C)`` times the table's
    ``gram`` map (a plain matrix product; ``bmm`` of a batch of 2x2 or 3x3 matrices costs 2-3x more on a CPU)."""
    w, c = entries.shape
    return ((entries[:, :, None] * entries[:, None, :]).reshape(w, c * c) @ tables["gram"]).reshape(w, n, n)


def _cholesky_channels(v: torch.Tensor, value_shape: tuple) -> torch.Tensor:
    """Packed ``(ln L_ii, L_ij i>j)`` of SPD samples ``(..., N, N)`` -> ``(..., N (N + 1) / 2)``."""
    if len(value_shape) != 2 or value_shape[0] != value_shape[1]:
        fail("values", f"hold values of shape {value_shape} with positive_definite=True", "tabulate square (N, N) matrices")
    n = value_shape[0]
    sym = 0.5 * (v + v.transpose(-1, -2))
    if float((v - sym).abs().max()) > 1e-8 * float(v.abs().max()):
        fail("values", "are not symmetric", "tabulate symmetric positive-definite matrices (an effective mass)")
    L, info = torch.linalg.cholesky_ex(sym)
    if bool((info != 0).any()):
        fail("values", f"are not positive definite at {int((info != 0).sum())} grid points",
             "tabulate an SPD function (or use positive_definite=False)")
    rows, cols = torch.tril_indices(n, n)
    packed = L[..., rows, cols]
    return torch.where(rows == cols, torch.log(packed), packed)
