"""Effective mass as a function of the CG coordinates: ``A(Q)`` models for latent dynamics.

``A(q) = J M^-1 J^T`` is defined per configuration (:func:`latentlab.maps.effective_mass`); the latent
dynamics needs a function of ``Q`` alone (docs/theory.md sections 1 and 4).  Three models, all batched
``Q (n_walkers, n_cg) -> A (n_walkers, n_cg, n_cg)``:

* :class:`TriangleMass` — closed form of the ``(r1, r2, cos)`` map from the masses of its three atoms;
* :class:`ConstantMass` — linear maps with constant masses;
* :class:`KernelMass` — for maps without a closed form (dihedrals, encoders): frames are binned by Q,
  each occupied bin b keeps its (weighted) mean ``A_b`` and its weight ``n_b``, and

      A(Q) = sum_b w_b(Q) A_b,   w_b = softmax_b( ln n_b - 1/2 sum_d d_d(Q, c_b)^2 / h_d^2 )

  with ``d`` the distance to the bin centre ``c_b`` (``2 sin(delta/2)`` for periodic coordinates) and
  bandwidth ``h`` one bin width.  A convex combination of positive-definite matrices is positive
  definite; the softmax never underflows (far from the data it picks the nearest bins); it is smooth
  in Q.  For an inconsistent map (phi/psi of alanine dipeptide) this is the best function of Q alone,
  and the map's consistency score is stored with it;
* :class:`GridMass` — the kernel table tabulated once on a fine grid (up to 3 coordinates): a
  cubic B-spline of its Cholesky factor (:class:`latentlab.interpolation.GridInterpolant`), positive
  definite everywhere, with exact ``dA/dQ`` from one table lookup instead of a sum over every bin.

Every model has :meth:`MassModel.logdet` (the one ``ln det A`` of the library), :meth:`MassModel.grad_logdet`
and :meth:`MassModel.value_and_derivative` (``A`` and ``dA/dQ`` together, what the sampler needs), and
serialises to a plain dictionary (:meth:`MassModel.to_dict`, :func:`mass_model_from_dict`) stored in model files.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch.func import jacfwd, vmap

from latentlab.binning import binned_means
from latentlab.maps.internal import triangle_mass_matrix
from latentlab.validation import as_tensor, fail


class MassModel:
    """Base of the ``A(Q)`` models: callable ``Q (W, N) -> A (W, N, N)``."""

    kind = "base"
    #: Consistency of the map the model was made for (:func:`latentlab.consistency.check_consistency`), or None.
    consistency: dict | None = None
    #: True where A(Q) takes periodic coordinates outside (-pi, pi] as they are (the four models below do: tables
    #: and kernels wrap them, the others have none), so the sampler need not wrap them before each evaluation.
    periodic_safe = False

    def __call__(self, Q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        return self.kind

    def logdet(self, Q: torch.Tensor) -> torch.Tensor:
        """``ln det A(Q)``, shape ``(W,)``; differentiable with respect to Q."""
        return torch.logdet(self(Q))

    def grad_logdet(self, Q: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """``grad_Q ln det A(Q)``, shape ``(W, N)``, in chunks of ``batch_size`` walkers."""
        out = []
        for s in range(0, Q.shape[0], batch_size):
            with torch.enable_grad():
                q = Q[s:s + batch_size].detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.logdet(q).sum(), q)
            out.append(g)
        return torch.cat(out) if out else torch.zeros_like(Q)

    def value_and_derivative(self, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A (W, N, N)`` and ``dA (W, N, N, N)`` with ``dA[w, i, j, k] = dA_ij / dQ_k``, exact.

        One forward-mode pass of A over ``N`` stacked copies of the walkers carrying unit tangents (about
        2x faster than ``vmap(jacfwd)`` on CPU); models without forward-AD support fall back to it.
        """
        w, n = Q.shape
        tangent = torch.eye(n, dtype=Q.dtype, device=Q.device).repeat_interleave(w, 0)  # (N W, N)
        try:
            with fwAD.dual_level():
                dual = self(fwAD.make_dual(Q.repeat(n, 1), tangent))
                primal, out = fwAD.unpack_dual(dual)
            if out is not None:
                return primal[:w], out.reshape(n, w, n, n).permute(1, 2, 3, 0)
        except (RuntimeError, NotImplementedError):
            pass
        return self(Q), vmap(jacfwd(lambda x: self(x[None])[0]))(Q)


def _is_dual(Q: torch.Tensor) -> bool:
    return fwAD.unpack_dual(Q).tangent is not None


class TriangleMass(MassModel):
    """Closed-form A(Q) of the ``(r1, r2, cos)`` map (docs/theory.md section 1).

    Parameters
    ----------
    inverse_masses : array, shape=(3,), 1/amu
        Inverse masses of atoms a, b (the vertex), c.
    """

    kind = "triangle"
    periodic_safe = True

    def __init__(self, inverse_masses):
        self.inverse_masses = as_tensor(inverse_masses, "inverse_masses", dtype=torch.float64).flatten()
        if self.inverse_masses.shape != (3,):
            fail("inverse_masses", f"has {self.inverse_masses.numel()} entries", "give 1/mass of atoms a, b, c")
        self._cast = {}

    def __call__(self, Q):
        if Q.requires_grad or _is_dual(Q):  # differentiable path (autograd, forward AD)
            key = (Q.dtype, Q.device)
            if key not in self._cast:
                self._cast[key] = self.inverse_masses.to(dtype=Q.dtype, device=Q.device)
            return triangle_mass_matrix(Q, self._cast[key])
        return self._terms(Q)[0]

    def _terms(self, Q):
        """A ``(W, 3, 3)`` and the shared terms of its derivative, from contiguous ``(W,)`` components and
        Python-number masses (the sampler's path: fewer and cheaper operations than on strided columns with
        0-d mass tensors; the same arithmetic as :func:`triangle_mass_matrix`, so the same A to the bit)."""
        ia, ib, ic = (float(m) for m in self.inverse_masses)
        key = (Q.dtype, Q.device)
        if key not in self._cast:
            self._cast[key] = self.inverse_masses.to(dtype=Q.dtype, device=Q.device)
        ia_t, _, ic_t = self._cast[key]  # (a Python number over a tensor is a reciprocal times it: other rounding)
        w = Q.shape[0]
        r1, r2, c = Q.T.contiguous()
        i11, i22, i12 = 1.0 / r1**2, 1.0 / r2**2, 1.0 / (r1 * r2)
        s = 1.0 - c * c
        sib = s * ib
        # t = A33 / s = ia/r1^2 + ic/r2^2 + ib (1/r1^2 + 1/r2^2 - 2 cos/(r1 r2))
        t = ia_t / r1**2 + ic_t / r2**2 + ib * (i11 + i22 - 2.0 * c / (r1 * r2))
        a11, a22 = torch.full_like(c, ia + ib), torch.full_like(c, ic + ib)
        a12, a13, a23 = c * ib, sib / r2, sib / r1
        a = torch.stack([a11, a12, a13, a12, a22, a23, a13, a23, s * t]).T.reshape(w, 3, 3)
        return a, (r1, r2, c, 1.0 / r1, 1.0 / r2, i11, i22, i12, s, t, ia, ib, ic)

    def value_and_derivative(self, Q):
        """A and its closed-form derivative ``dA[w, i, j, k] = dA_ij / dQ_k`` (no automatic differentiation)."""
        if Q.requires_grad or _is_dual(Q):
            return self._value_and_derivative_tracked(Q)
        a, (r1, r2, c, i1, i2, i11, i22, i12, s, t, ia, ib, ic) = self._terms(Q)
        w = Q.shape[0]
        z = torch.zeros_like(c)
        ib_w = torch.full_like(c, ib)
        cib2 = c * (-2.0 * ib)
        d13 = (-s * ib * i22, cib2 * i2)  # d/dr2, d/dcos of A13 (d/dr1 = 0)
        d23 = (-s * ib * i11, cib2 * i1)  # d/dr1, d/dcos of A23 (d/dr2 = 0)
        two_cib = 2.0 * ib * c
        d33 = (s * i1 * (i11 * (-2.0 * (ia + ib)) + two_cib * i12),
               s * i2 * (i22 * (-2.0 * (ic + ib)) + two_cib * i12),
               -2.0 * c * t - 2.0 * ib * s * i12)
        entries = [z, z, z, z, z, ib_w, z, d13[0], d13[1],  # (i, j) = (0, 0), (0, 1), (0, 2); each d/dr1, d/dr2, d/dcos
                   z, z, ib_w, z, z, z, d23[0], z, d23[1],  # (1, 0), (1, 1), (1, 2)
                   z, d13[0], d13[1], d23[0], z, d23[1], *d33]  # (2, 0), (2, 1), (2, 2)
        return a, torch.stack(entries).T.reshape(w, 3, 3, 3)

    def _value_and_derivative_tracked(self, Q):
        """:meth:`value_and_derivative` with torch operations that autograd and forward AD can follow."""
        key = (Q.dtype, Q.device)
        if key not in self._cast:
            self._cast[key] = self.inverse_masses.to(dtype=Q.dtype, device=Q.device)
        ia, ib, ic = self._cast[key]
        r1, r2, c = Q[:, 0], Q[:, 1], Q[:, 2]
        s = 1.0 - c * c
        t = ia / r1**2 + ic / r2**2 + ib * (1.0 / r1**2 + 1.0 / r2**2 - 2.0 * c / (r1 * r2))
        z = torch.zeros_like(r1)
        d12 = (z, z, ib.expand_as(r1))
        d13 = (z, -s * ib / r2**2, -2.0 * c * ib / r2)
        d23 = (-s * ib / r1**2, z, -2.0 * c * ib / r1)
        d33 = (s * (-2.0 * ia / r1**3 + ib * (-2.0 / r1**3 + 2.0 * c / (r1**2 * r2))),
               s * (-2.0 * ic / r2**3 + ib * (-2.0 / r2**3 + 2.0 * c / (r1 * r2**2))),
               -2.0 * c * t - 2.0 * s * ib / (r1 * r2))
        zero = (z, z, z)
        rows = [zero, d12, d13, d12, zero, d23, d13, d23, d33]  # entries (i, j) in row-major order, each (d/dr1, d/dr2, d/dcos)
        dA = torch.stack([torch.stack(d, -1) for d in rows], 1).reshape(-1, 3, 3, 3)
        return triangle_mass_matrix(Q, self._cast[key]), dA

    def to_dict(self):
        return {"kind": self.kind, "inverse_masses": self.inverse_masses.clone(), "consistency": self.consistency}

    def describe(self):
        return "closed form ((r1, r2, cos) map, physical masses)"


class ConstantMass(MassModel):
    """Constant A (linear maps with constant masses), ``(N, N)`` in Q-unit^2/amu."""

    kind = "constant"
    periodic_safe = True

    def __init__(self, matrix):
        self.matrix = as_tensor(matrix, "matrix", dtype=torch.float64)

    def __call__(self, Q):
        return self.matrix.to(dtype=Q.dtype, device=Q.device).expand(Q.shape[0], -1, -1)

    def value_and_derivative(self, Q):
        n = Q.shape[1]
        return self(Q), Q.new_zeros(Q.shape[0], n, n, n)

    def to_dict(self):
        return {"kind": self.kind, "matrix": self.matrix.clone(), "consistency": self.consistency}

    def describe(self):
        return "closed form (constant, linear map)"


class KernelMass(MassModel):
    """Kernel-smoothed binned mean of A(q) over data (see the module docstring).

    Parameters
    ----------
    centres : array, shape=(n_bins, n_cg)
    values : array, shape=(n_bins, n_cg, n_cg)
        Mean A in each occupied bin.
    counts : array, shape=(n_bins,)
        Number of frames (summed frame weights) in each bin.
    bandwidth : array, shape=(n_cg,)
    periodic : sequence of bool
    """

    kind = "kernel"
    periodic_safe = True

    def __init__(self, centres, values, counts, bandwidth, periodic):
        self.centres = as_tensor(centres, "centres", dtype=torch.float64)
        self.values = as_tensor(values, "values", dtype=torch.float64)
        self.counts = as_tensor(counts, "counts", dtype=torch.float64)
        self.bandwidth = as_tensor(bandwidth, "bandwidth", dtype=torch.float64)
        self.periodic = [bool(p) for p in periodic]
        b, n = self.centres.shape
        if self.values.shape != (b, n, n) or self.counts.shape != (b,) or self.bandwidth.shape != (n,):
            fail("KernelMass", "centres, values, counts and bandwidth have inconsistent shapes",
                 "pass (B, N), (B, N, N), (B,), (N,)")
        self._cast = {}

    def _tensors(self, Q):
        key = (Q.dtype, Q.device)
        if key not in self._cast:
            self._cast[key] = (self.centres.to(Q), self.values.to(Q), torch.log(self.counts).to(Q),
                               self.bandwidth.to(Q), torch.tensor(self.periodic, device=Q.device))
        return self._cast[key]

    def __call__(self, Q):
        return _KernelAverage.apply(Q, *self._tensors(Q))

    def reference(self, Q):
        """The same A(Q) with plain torch ops (slow under forward-mode AD; tests the analytic derivative)."""
        c, v, logn, h, per = self._tensors(Q)
        delta = Q[:, None, :] - c[None]  # (W, B, N)
        delta = torch.where(per, 2.0 * torch.sin(0.5 * delta), delta)
        w = torch.softmax(logn - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)  # (W, B)
        return torch.einsum("wb,bij->wij", w, v)

    def to_dict(self):
        return {"kind": self.kind, "centres": self.centres.clone(), "values": self.values.clone(),
                "counts": self.counts.clone(), "bandwidth": self.bandwidth.clone(), "periodic": list(self.periodic),
                "consistency": self.consistency}

    def describe(self):
        return f"kernel-smoothed binned mean of A(q) over {self.centres.shape[0]} bins"


class _KernelAverage(torch.autograd.Function):
    """``A(Q) = sum_b softmax_b(l_b(Q)) A_b`` with analytic forward- and reverse-mode derivatives.

    ``l_b = ln n_b - 1/2 sum_d (delta_bd / h_d)^2``, ``delta = Q - c`` (or ``2 sin((Q - c)/2)`` for periodic
    coordinates).  With ``dl_bd = -delta_bd / h_d^2 * d delta_bd / dQ_d`` and ``w = softmax(l)``:
    ``dw_b/dQ_d = w_b (dl_bd - sum_b' w_b' dl_b'd)`` and ``dA/dQ_d = sum_b dw_b/dQ_d A_b``.
    Generic forward-mode AD through the (walkers x bins x N) intermediates was ~8x slower.
    """

    @staticmethod
    def forward(ctx, Q, c, v, logn, h, per):
        diff = Q[:, None, :] - c[None]  # (W, B, N)
        delta = torch.where(per, 2.0 * torch.sin(0.5 * diff), diff)
        ddelta = torch.where(per, torch.cos(0.5 * diff), torch.ones_like(diff))
        w = torch.softmax(logn - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)  # (W, B)
        dl = -(delta / h**2) * ddelta  # (W, B, N)
        ctx.w, ctx.dl, ctx.v = w, dl, v
        return torch.einsum("wb,bij->wij", w, v)

    @staticmethod
    def _dw(w, dl, t):
        dlt = torch.einsum("wbd,wd->wb", dl, t)  # directional derivative of the logits
        return w * (dlt - (w * dlt).sum(-1, keepdim=True))

    @staticmethod
    def jvp(ctx, tQ, *_):
        return torch.einsum("wb,bij->wij", _KernelAverage._dw(ctx.w, ctx.dl, tQ), ctx.v)

    @staticmethod
    def backward(ctx, gA):
        w, dl = ctx.w, ctx.dl
        s = torch.einsum("wij,bij->wb", gA, ctx.v)  # (W, B)
        m = torch.einsum("wb,wbd->wd", w, dl)
        gQ = torch.einsum("wb,wbd->wd", s * w, dl) - (s * w).sum(-1, keepdim=True) * m
        return gQ, None, None, None, None, None


class GridMass(MassModel):
    """A tabulated A(Q): a :class:`latentlab.interpolation.GridInterpolant` of ``(N, N)`` positive-definite matrices."""

    kind = "grid"
    periodic_safe = True

    def __init__(self, table):
        from latentlab.interpolation import GridInterpolant

        self.table = table if isinstance(table, GridInterpolant) else GridInterpolant.from_dict(table)
        if not self.table.positive_definite:
            fail("table", "does not hold positive-definite matrices", "tabulate A(Q) with positive_definite=True")

    def __call__(self, Q):
        return self.table(Q)

    def value_and_derivative(self, Q, cells=None):
        return self.table.value_and_jacobian(Q, cells)

    def value_and_cells(self, Q):
        """A(Q) and the walkers' table cells (:class:`latentlab.interpolation.TableCells`), for A and dA/dQ at
        points near Q (a fixed point's iterates, then its solution) without finding the cells again."""
        if not self.table.keeps_cells:  # see GridInterpolant.keeps_cells: plain lookups
            return self.table(Q), None
        return self.table.value_and_cells(Q)

    def to_dict(self):
        return {"kind": self.kind, "table": self.table.to_dict(), "consistency": self.consistency}

    def describe(self):
        return f"tabulated A(Q) on a {'x'.join(str(n) for n in self.table.n_points)} grid (Cholesky B-spline)"


def tabulate_mass(mass: MassModel, n_points=None) -> MassModel:
    """A :class:`GridMass` of a kernel table with up to 3 coordinates (any other model is returned as it is).

    The grid spans the bin centres +- 3 bandwidths (the whole circle for periodic coordinates); outside it
    A levels off (``extrapolation="constant"``).
    """
    if not isinstance(mass, KernelMass) or mass.centres.shape[1] > 3:
        return mass
    from latentlab.interpolation import GridInterpolant

    lo, hi = mass.centres.amin(0) - 3 * mass.bandwidth, mass.centres.amax(0) + 3 * mass.bandwidth
    bounds = [None if p else (float(a), float(b)) for p, a, b in zip(mass.periodic, lo, hi)]
    table = GridInterpolant.from_function(mass.reference, bounds, mass.periodic, n_points, extrapolation="constant",
                                          positive_definite=True)
    grid = GridMass(table)
    grid.consistency = mass.consistency
    return grid


def mass_model_from_dict(d: dict) -> MassModel:
    """Rebuild a mass model from :meth:`MassModel.to_dict` output (as stored in model files)."""
    if not isinstance(d, dict) or "kind" not in d:
        fail("mass_model", "is not a stored effective-mass model", "re-train the model with this latentlab")
    kind = d["kind"]
    if kind == "triangle":
        m = TriangleMass(d["inverse_masses"])
    elif kind == "constant":
        m = ConstantMass(d["matrix"])
    elif kind == "kernel":
        m = KernelMass(d["centres"], d["values"], d["counts"], d["bandwidth"], d["periodic"])
    elif kind == "grid":
        m = GridMass(d["table"])
    else:
        fail("mass_model", f"unknown kind {kind!r}", "use a model file written by this latentlab")
    m.consistency = d.get("consistency")
    return m


def default_bins(n_cg: int) -> int:
    """Bins per coordinate of the kernel mass table: 16 (N <= 2), 8 (N = 3), 4 (N > 3).

    A(q) varies slowly with Q; coarse bins keep the table (and every step of the sampler) cheap.
    """
    return 16 if n_cg <= 2 else (8 if n_cg == 3 else 4)


def closed_form_mass(cg_map, masses) -> MassModel | None:
    """The closed-form A(Q) of ``cg_map`` with constant ``masses (n_atoms,)`` amu, or None if it has none."""
    from latentlab.maps.internal import TriangleMap

    m = as_tensor(masses, "masses", dtype=torch.float64)
    inv = 1.0 / m[list(cg_map.atoms)]
    if isinstance(cg_map, TriangleMap):
        return TriangleMass(inv)
    if cg_map.is_linear:
        a = cg_map.closed_form_effective_mass(torch.zeros(1, cg_map.n_cg, dtype=torch.float64), inv)
        if a is not None:
            return ConstantMass(a[0])
    return None


def build_mass_model(cg_map, positions=None, masses=None, *, weights=None, bins: int | None = None,
                     max_frames: int = 20000, consistency: bool = True, kind: str = "auto",
                     tabulate: bool = True) -> MassModel:
    """The effective mass A(Q) for latent dynamics with ``cg_map``.

    Parameters
    ----------
    cg_map : CGMap
    positions : array, shape=(n_frames, n_atoms, 3), nm, optional
        Frames for the kernel table and the consistency score; needed unless the map has a closed form.
    masses : array, shape=(n_atoms,), amu
    weights : array, shape=(n_frames,), optional
        Frame weights (e.g. importance weights of flow samples) for the kernel table.
    bins : int, optional
        Bins per coordinate of the kernel table (default :func:`default_bins`).
    max_frames : int
        Frames (evenly strided) used for the kernel table.
    consistency : bool
        Compute the map's level-set consistency score (:func:`latentlab.consistency.check_consistency`, on up
        to 200 frames) and store it as ``.consistency``.
    kind : {"auto", "closed-form", "kernel"}
    tabulate : bool
        Return a kernel table with up to 3 coordinates as a :class:`GridMass` (:func:`tabulate_mass`).

    Returns
    -------
    MassModel
    """
    from latentlab.maps.mass import effective_mass

    if kind not in ("auto", "closed-form", "kernel"):
        fail("kind", f"got {kind!r}", "use 'auto', 'closed-form' or 'kernel'")
    if masses is None:
        fail("masses", "were not given", "pass the atomic masses (amu), e.g. dataset.masses")
    model = closed_form_mass(cg_map, masses) if kind != "kernel" else None
    if model is None and kind == "closed-form":
        fail("kind", f"the map {cg_map.spec or cg_map!r} has no closed-form effective mass", "use kind='kernel'")
    x = w = None
    if positions is not None:
        stride = max(1, len(positions) // int(max_frames))
        x = as_tensor(positions[::stride], "positions", dtype=torch.float64)
        w = None if weights is None else torch.as_tensor(weights[::stride], dtype=torch.float64)
    if model is None:
        if x is None:
            fail("positions", f"the map {cg_map.spec or cg_map!r} has no closed-form A(Q)",
                 "pass a data set (or positions) so A(Q) can be estimated from data")
        Q = cg_map.map_frames(x)
        a = effective_mass(cg_map, x, masses).detach()
        centres, values, counts, width, inverse = binned_means(Q, a, cg_map.periodic,
                                                                int(bins or default_bins(cg_map.n_cg)), w)
        model = KernelMass(centres, values, counts, width, cg_map.periodic)
        spread = torch.linalg.matrix_norm(a - values[inverse]) / torch.linalg.matrix_norm(values[inverse])
        model.consistency = {"binned_spread_mean": float(spread.mean()),
                             "binned_spread_p95": float(torch.quantile(spread, 0.95))}
    if consistency and x is not None:
        from latentlab.consistency import check_consistency

        sub = x[:: max(1, x.shape[0] // 200)][:200]
        report = check_consistency(cg_map, sub, masses, n_level_set_frames=min(100, sub.shape[0]))
        model.consistency = {**(model.consistency or {}), "score": report.score, "verdict": report.verdict(),
                             "binned_median": report.binned.get("median")}
    return tabulate_mass(model) if tabulate else model
