"""Fixed priors of a neural CG potential: harmonic walls and the data-support prior.

Both are parts of V that training does not change (their parameters are buffers), added to the network
as in CGnet (Wang et al., ACS Cent. Sci. 5, 755 (2019)), with the prior taken from the data instead of a
force field:

:class:`HarmonicWalls`
    ``1/2 k (q - hi)^2`` above ``hi`` and ``1/2 k (lo - q)^2`` below ``lo`` along each non-periodic
    coordinate, ``lo``/``hi`` the range the data covered, ``k = kT / (0.1 std)^2`` (0.5 kT at 10 % of a
    standard deviation outside).  Zero inside the data range, so it does not bias force matching;
    outside it keeps walkers from regions where the network's extrapolation means nothing.
:class:`SupportPrior`
    ``1/2 kT (l* - l(Q))^2`` where ``l(Q)`` is the log kernel density of the training data (a binned
    table, Gaussian kernels of one bin width, periodic-aware) and ``l*`` its 2 % quantile over the
    training frames: zero where the data are dense, rising where they are sparse or absent, in any
    number of dimensions (the walls only box each coordinate).  Where frames exist force matching can
    cancel it; where none exist it keeps the walkers out.  For up to 3 coordinates ``l(Q)`` is
    tabulated once on a fine grid (:class:`latentlab.interpolation.GridInterpolant`, a cubic B-spline
    with exact derivatives): a lookup per walker instead of a sum over hundreds of kernels (the
    prior cost 26 ms of a 51 ms step with 1024 walkers on chignolin before).

Shapes: ``Q (n_walkers, n_cg)`` -> energies ``(n_walkers,)`` kJ/mol.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from latentlab.binning import binned_means
from latentlab.interpolation import GridInterpolant

#: Wall stiffness in units of kT / std^2 (the wall costs 0.5 kT at 10 % of a std outside the data range).
WALL_STIFFNESS = 1.0 / 0.1**2

#: Bins per coordinate of the support prior's kernel table, by number of coordinates (5 beyond 3).
SUPPORT_BINS = {1: 40, 2: 24, 3: 8}


class HarmonicWalls(nn.Module):
    """Harmonic walls outside ``[lo, hi]`` per coordinate (``-inf``/``inf`` or ``k = 0``: no wall).

    Parameters
    ----------
    lo, hi, k : tensor, shape=(n_cg,)
        Data range per coordinate (its unit) and stiffness (kJ/mol per unit^2).
    """

    def __init__(self, n_cg: int, lo=None, hi=None, k=None):
        super().__init__()
        full = lambda v, d: torch.full((n_cg,), d, dtype=torch.float64) if v is None else torch.as_tensor(v, dtype=torch.float64).clone()  # noqa: E731
        self.register_buffer("lo", full(lo, -math.inf))
        self.register_buffer("hi", full(hi, math.inf))
        self.register_buffer("k", full(k, 0.0))

    def _walls(self, Q):
        """``lo, hi, k`` in Q's dtype and device, and whether any wall acts (cast once, not per call)."""
        key = (Q.dtype, Q.device, *((b.data_ptr(), b._version) for b in (self.lo, self.hi, self.k)))
        cached = self.__dict__.get("_cast")
        if cached is None or cached[0] != key:
            lo, hi, k = self.lo.to(Q), self.hi.to(Q), self.k.to(Q)
            active = bool(((k != 0) & (torch.isfinite(lo) | torch.isfinite(hi))).any())
            cached = self.__dict__["_cast"] = (key, lo, hi, k, active)
        return cached[1:]

    def _outside(self, Q):
        """Distance outside ``[lo, hi]`` per coordinate (negative below ``lo``), ``(W, n_cg)``, and ``k``."""
        lo, hi, k, _ = self._walls(Q)
        return Q - torch.clamp(Q, lo, hi), k  # infinite bounds: 0

    def forward(self, Q: torch.Tensor) -> torch.Tensor:
        d, k = self._outside(Q)
        return 0.5 * (k * d * d).sum(-1)

    def energy_and_gradient(self, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy ``(W,)`` and its gradient ``(W, n_cg)`` in closed form (zeros, without arithmetic, when no wall acts)."""
        if not self._walls(Q)[3]:
            return Q.new_zeros(Q.shape[0]), torch.zeros_like(Q)
        d, k = self._outside(Q)
        kd = k * d
        return 0.5 * (kd * d).sum(-1), kd

    @classmethod
    def around(cls, Q: torch.Tensor, periodic, kT: float, wall_range=None) -> "HarmonicWalls":
        """Walls at the range of ``Q (n_frames, n_cg)`` (or ``wall_range = (lo, hi)``), none on periodic coordinates."""
        n = Q.shape[1]
        per = torch.tensor([bool(p) for p in periodic])
        std = torch.where(per, torch.ones(n, dtype=torch.float64), Q.std(0))
        k = torch.where(per, torch.zeros(n, dtype=torch.float64), kT * WALL_STIFFNESS / std**2)
        lo, hi = (Q.amin(0), Q.amax(0)) if wall_range is None else wall_range
        return cls(n, lo, hi, k)


class SupportPrior(nn.Module):
    """``1/2 k (l* - l(Q))^2`` where the data's log kernel density ``l`` is below ``l*`` (else 0), kJ/mol.

    Parameters
    ----------
    n_cg : int
    n_bins : int
        Number of occupied bins of the kernel table (0: the prior is off).
    periodic : sequence of bool
    table : dict, optional
        Layout of the tabulated ``l(Q)`` (:meth:`table_config`); its values come from the state dict.
    """

    def __init__(self, n_cg: int, n_bins: int = 0, periodic=None, table: dict | None = None):
        super().__init__()
        self.n_bins = int(n_bins)
        self.register_buffer("centres", torch.zeros(self.n_bins, n_cg, dtype=torch.float64))
        self.register_buffer("logw", torch.zeros(self.n_bins, dtype=torch.float64))
        self.register_buffer("h", torch.ones(n_cg, dtype=torch.float64))
        self.register_buffer("level", torch.zeros((), dtype=torch.float64))
        self.register_buffer("k", torch.zeros((), dtype=torch.float64))
        per = [False] * n_cg if periodic is None else [bool(p) for p in periodic]
        self.register_buffer("periodic_mask", torch.tensor(per, dtype=torch.bool))
        self.table = None
        if table is not None:
            padded = [n + (3 if p else 2) for n, p in zip(table["n_points"], table["periodic"])]
            self.table = GridInterpolant(torch.zeros(padded + [1], dtype=torch.float64), table["bounds"],
                                         table["periodic"], table["n_points"], method=table["method"],
                                         extrapolation=table["extrapolation"])

    @classmethod
    def from_data(cls, Q: torch.Tensor, periodic, kT: float, quantile: float = 0.02, weights=None,
                  tabulate: bool = True) -> "SupportPrior":
        """The prior of the data ``Q (n_frames, n_cg)`` (frame ``weights`` optional), tabulated when ``n_cg <= 3``."""
        n = Q.shape[1]
        bins = SUPPORT_BINS.get(n, 5)
        ones = torch.ones(Q.shape[0], 1, dtype=torch.float64)
        centres, _, counts, width, _ = binned_means(Q, ones, periodic, bins, weights)
        prior = cls(n, int(centres.shape[0]), periodic)
        prior.centres.copy_(centres)
        prior.logw.copy_(torch.log(counts))
        prior.h.copy_(width)
        if tabulate and n <= 3:
            prior.tabulate()
        with torch.no_grad():  # in blocks: the table's corner weights for a million frames would take GBs
            dens = torch.cat([prior.log_density(Q[s:s + 65536].to(torch.float64)) for s in range(0, Q.shape[0], 65536)])
        prior.level.fill_(float(torch.quantile(dens, quantile)))
        prior.k.fill_(float(kT))  # kT per (unit of log density)^2
        return prior

    def kernel_log_density(self, Q: torch.Tensor) -> torch.Tensor:
        """Log kernel density of the training data at ``Q``, ``(n_walkers,)`` (up to a constant), by the kernel sum."""
        c, h = self.centres.to(Q), self.h.to(Q)
        delta = Q[:, None, :] - c[None]  # (W, B, N)
        delta = torch.where(self.periodic_mask.to(Q.device), 2.0 * torch.sin(0.5 * delta), delta)
        return torch.logsumexp(self.logw.to(Q) - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)

    def log_density(self, Q: torch.Tensor) -> torch.Tensor:
        """Log kernel density of the training data at ``Q``, ``(n_walkers,)``: the table when there is one."""
        if self.table is not None:
            return self.table(Q)
        return self.kernel_log_density(Q)

    def tabulate(self, n_points=None) -> None:
        """Tabulate ``l(Q)`` on a grid over the kernel centres +- 3 bandwidths (the whole circle for periodic
        coordinates); outside it ``l`` continues linearly (the prior keeps rising; the walls take over)."""
        if self.n_bins == 0 or self.centres.shape[1] > 3:
            return
        per = self.periodic_mask.tolist()
        lo, hi = self.centres.amin(0) - 3 * self.h, self.centres.amax(0) + 3 * self.h
        bounds = [None if p else (float(a), float(b)) for p, a, b in zip(per, lo, hi)]
        chunk = max(256, 2**22 // (self.n_bins * len(per)))  # the kernel sum's (points, centres, n_cg) temporaries ~32 MB
        self.table = GridInterpolant.from_function(self.kernel_log_density, bounds, per, n_points,
                                                   extrapolation="linear", chunk_size=chunk)

    def table_config(self) -> dict | None:
        """Layout of the table (no values), for the potential's configuration."""
        if self.table is None:
            return None
        return {k: v for k, v in self.table.to_dict().items() if k in ("bounds", "periodic", "n_points", "method",
                                                                         "extrapolation")}

    def forward(self, Q: torch.Tensor) -> torch.Tensor:
        if self.n_bins == 0:
            return Q.new_zeros(Q.shape[0])
        gap = torch.clamp(self.level.to(Q) - self.log_density(Q), min=0.0)
        return 0.5 * self.k.to(Q) * gap**2

    def energy_and_gradient(self, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy ``(W,)`` and gradient ``(W, n_cg)``: one table lookup with its exact derivative when tabulated."""
        if self.n_bins == 0:
            return Q.new_zeros(Q.shape[0]), torch.zeros_like(Q)
        if self.table is not None:
            l, dl = self.table.value_and_grad(Q)
        else:
            with torch.enable_grad():
                q = Q.detach().requires_grad_(True)
                lq = self.kernel_log_density(q)
                (dl,) = torch.autograd.grad(lq.sum(), q)
            l = lq.detach()
        gap = torch.clamp(self.level.to(Q) - l, min=0.0)
        kgap = self.k.to(Q) * gap
        return 0.5 * kgap * gap, -kgap[:, None] * dl
