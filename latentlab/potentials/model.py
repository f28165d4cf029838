"""The neural CG potential ``V_theta(Q)``.

Inputs respect the map: a periodic coordinate (a dihedral) enters as
``(sin q, cos q)``, any other as ``(q - mean) / std`` with the mean and
standard deviation of the training data, so one set of hyper-parameters
works for nm, rad and dimensionless coordinates alike.  The output is
``V = kT_ref * MLP(features) + walls(Q)`` in kJ/mol.

The optional prior is a harmonic wall just outside the range the data
covered along each non-periodic coordinate,
``1/2 k (q - hi)^2`` above ``hi`` and ``1/2 k (lo - q)^2`` below ``lo`` with
``k = kT / (0.1 std)^2`` (0.5 kT at 10 % of a standard deviation outside),
so latent Langevin walkers cannot wander into regions the network never saw
and where its extrapolation (linear for SiLU) is meaningless.  Inside the
data range it is exactly zero and does not bias force matching.

The optional data-support prior (``support=True`` in :meth:`CGPotential.from_data`) adds
``1/2 kT (l* - l(Q))^2`` where ``l(Q)`` is the log kernel density of the training data (a
binned table, Gaussian kernels of one bin width, periodic-aware) and ``l*`` its 2 % quantile
over the training frames: zero where the data are dense, rising where they are sparse or
absent, in any number of dimensions (the walls only box each coordinate).  It is part of V
during training, so where frames exist force matching can cancel it; where none exist it
keeps the walkers out.  This follows the prior-plus-network design of CGnet (Wang et al.
2019), with the prior taken from the data's support instead of a force field.

Temperature conditioning (seed sec. 3.3) adds the feature
``(T - T_ref) / 100 K`` to the input, giving ``W(theta, T, Q)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from latentlab.units import KB
from latentlab.validation import as_tensor, check_positive, fail

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU}

#: Width of the temperature feature: (T - T_ref) / TEMPERATURE_SCALE, K.
TEMPERATURE_SCALE = 100.0

#: Wall stiffness in units of kT / std^2 (the wall costs 0.5 kT at 10 % of a std outside the data range).
WALL_STIFFNESS = 1.0 / 0.1**2


class CGPotential(nn.Module):
    """MLP potential ``V(Q)`` (kJ/mol) on CG coordinates.

    Parameters
    ----------
    n_cg : int
        Number of CG coordinates ``N``.
    periodic : sequence of bool, optional
        Per coordinate; periodic ones (rad, period 2 pi) enter as sin/cos.
    mean, std : array, shape=(n_cg,), optional
        Input standardisation (units of each coordinate); default 0 and 1.
    hidden : sequence of int
        Hidden layer widths (default three layers of 128).
    activation : {"silu", "tanh", "softplus", "gelu"}
        Must be smooth: the dynamics and the loss use grad V (and force matching its parameter derivative).
    temperature : float, K
        Reference temperature; ``kT_ref`` scales the network output.
    wall_lo, wall_hi : array, shape=(n_cg,), optional
        Data range per coordinate for the harmonic-wall prior (``-inf``/``inf`` for none).
    wall_k : array, shape=(n_cg,), optional
        Wall stiffness in kJ/mol per unit^2 (0 disables).
    temperature_conditioning : bool
        Add ``(T - T_ref)/100 K`` as an input: ``V(Q, T)``.
    names, units : sequence of str, optional
        Coordinate names and units (metadata only).
    support_bins : int
        Size of the data-support prior table (0: none); filled by :meth:`from_data` (see the module docstring).
    n_members : int
        Number of independently initialised MLPs whose mean is V (an ensemble; 1 = a single MLP).
        Force matching trains each member on its own loss; averaging them cancels much of the
        fit-to-noise of each (the targets are mostly noise).
    """

    def __init__(self, n_cg: int, *, periodic: Sequence[bool] | None = None, mean=None, std=None,
                 hidden: Sequence[int] = (128, 128, 128), activation: str = "silu", temperature: float = 300.0,
                 wall_lo=None, wall_hi=None, wall_k=None, temperature_conditioning: bool = False,
                 names: Sequence[str] | None = None, units: Sequence[str] | None = None, n_members: int = 1,
                 support_bins: int = 0):
        super().__init__()
        if int(n_cg) < 1:
            fail("n_cg", f"got {n_cg}", "give the number of CG coordinates (>= 1)")
        n = self.n_cg = int(n_cg)
        self.periodic = [False] * n if periodic is None else [bool(p) for p in periodic]
        if len(self.periodic) != n:
            fail("periodic", f"has {len(self.periodic)} entries for {n} coordinates", "give one flag per coordinate")
        hidden = [int(h) for h in hidden]
        if not hidden or min(hidden) < 1:
            fail("hidden", f"got {hidden}", "give positive layer widths, e.g. (128, 128, 128)")
        if activation not in ACTIVATIONS:
            fail("activation", f"unknown activation {activation!r}", f"use one of {', '.join(ACTIVATIONS)}")
        self.hidden = hidden
        self.activation = activation
        self.temperature = check_positive(temperature, "temperature", "K")
        self.temperature_conditioning = bool(temperature_conditioning)
        self.names = list(names) if names is not None else [f"q{i}" for i in range(n)]
        self.units = list(units) if units is not None else ["1"] * n

        def vec(value, default, argument):
            t = torch.full((n,), default, dtype=torch.float64) if value is None else as_tensor(value, argument, dtype=torch.float64).flatten()
            if t.shape != (n,):
                fail(argument, f"has {t.numel()} entries for {n} coordinates", "give one value per coordinate")
            return t

        std_t = vec(std, 1.0, "std")
        if bool((std_t <= 0).any()) or not bool(torch.isfinite(std_t).all()):
            fail("std", f"has non-positive or non-finite entries {std_t.tolist()}",
                 "every coordinate must vary in the data (drop constant coordinates)")
        self.register_buffer("mean", vec(mean, 0.0, "mean"))
        self.register_buffer("std", std_t)
        self.register_buffer("wall_lo", vec(wall_lo, -math.inf, "wall_lo"))
        self.register_buffer("wall_hi", vec(wall_hi, math.inf, "wall_hi"))
        self.register_buffer("wall_k", vec(wall_k, 0.0, "wall_k"))
        self.register_buffer("periodic_mask", torch.tensor(self.periodic, dtype=torch.bool))
        self.support_bins = int(support_bins)
        b = self.support_bins
        self.register_buffer("support_centres", torch.zeros(b, n, dtype=torch.float64))
        self.register_buffer("support_logw", torch.zeros(b, dtype=torch.float64))
        self.register_buffer("support_h", torch.ones(n, dtype=torch.float64))
        self.register_buffer("support_level", torch.zeros((), dtype=torch.float64))
        self.register_buffer("support_k", torch.zeros((), dtype=torch.float64))
        n_in = sum(2 if p else 1 for p in self.periodic) + (1 if self.temperature_conditioning else 0)
        if int(n_members) < 1:
            fail("n_members", f"got {n_members}", "use 1 (a single MLP) or more (an ensemble)")
        self.n_members = int(n_members)

        def mlp():
            layers: list[nn.Module] = []
            width = n_in
            for h in hidden:
                layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
                width = h
            layers.append(nn.Linear(width, 1))
            return nn.Sequential(*layers)

        self.net = mlp()
        self.members = nn.ModuleList([mlp() for _ in range(self.n_members - 1)])
        self.metadata: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(cls, Q, *, periodic: Sequence[bool] | None = None, temperature: float = 300.0, prior: bool = True,
                  wall_range=None, support: bool = False, support_quantile: float = 0.02, **kwargs) -> "CGPotential":
        """A model standardised to training coordinates ``Q (n_frames, n_cg)``, with walls if ``prior``.

        The walls sit at ``wall_range = (lo, hi)`` (arrays of shape (n_cg,)), by default the range of ``Q``;
        pass the range of all the data (validation frames included) so that no data point is walled off.
        """
        q = as_tensor(Q, "Q", dtype=torch.float64)
        if q.dim() != 2 or q.shape[0] < 2:
            fail("Q", f"has shape {tuple(q.shape)}", "pass CG coordinates of shape (n_frames, n_cg), n_frames >= 2")
        n = q.shape[1]
        per = [False] * n if periodic is None else [bool(p) for p in periodic]
        mean, std = q.mean(0), q.std(0)
        mean[torch.tensor(per, dtype=torch.bool)] = 0.0
        std[torch.tensor(per, dtype=torch.bool)] = 1.0
        walls = {}
        if prior:
            kT = KB * float(temperature)
            k = torch.where(torch.tensor(per), torch.zeros(n, dtype=torch.float64), kT * WALL_STIFFNESS / std**2)
            lo, hi = (q.amin(0), q.amax(0)) if wall_range is None else (
                as_tensor(wall_range[0], "wall_range", dtype=torch.float64), as_tensor(wall_range[1], "wall_range", dtype=torch.float64))
            walls = {"wall_lo": lo, "wall_hi": hi, "wall_k": k}
        if not (prior and support):
            return cls(n, periodic=per, mean=mean, std=std, temperature=temperature, **walls, **kwargs)
        bins = {1: 40, 2: 24, 3: 8}.get(n, 5)
        from latentlab.simulation import _binned_mean_mass

        ones = torch.eye(n, dtype=q.dtype).expand(q.shape[0], n, n)
        centres, _, counts, width, _ = _binned_mean_mass(q, ones, per, bins)
        model = cls(n, periodic=per, mean=mean, std=std, temperature=temperature, **walls,
                    support_bins=int(centres.shape[0]), **kwargs)
        model.support_centres.copy_(centres)
        model.support_logw.copy_(torch.log(counts))
        model.support_h.copy_(width)
        level = torch.quantile(model.log_support(q), support_quantile)
        model.support_level.fill_(float(level))
        model.support_k.fill_(KB * float(temperature))  # kT per (unit of log density)^2
        return model

    def config(self) -> dict:
        """Constructor arguments (plain Python types) that rebuild this architecture; buffers come from the state dict."""
        return {"n_cg": self.n_cg, "periodic": list(self.periodic), "hidden": list(self.hidden),
                "activation": self.activation, "temperature": self.temperature,
                "temperature_conditioning": self.temperature_conditioning, "names": list(self.names),
                "units": list(self.units), "n_members": self.n_members, "support_bins": self.support_bins}

    @property
    def kT(self) -> float:
        """Reference thermal energy, kJ/mol."""
        return KB * self.temperature

    # ------------------------------------------------------------------ evaluation
    def features(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """Network input ``(n_walkers, n_features)`` from ``Q (n_walkers, n_cg)``."""
        parts = []
        for i, per in enumerate(self.periodic):
            q = Q[:, i]
            if per:
                parts += [torch.sin(q), torch.cos(q)]
            else:
                parts.append((q - self.mean[i].to(q)) / self.std[i].to(q))
        if self.temperature_conditioning:
            t = self._temperature(temperature, Q)
            parts.append((t - self.temperature) / TEMPERATURE_SCALE)
        return torch.stack(parts, dim=-1)

    def _temperature(self, temperature, Q):
        if temperature is None:
            return torch.full((Q.shape[0],), self.temperature, dtype=Q.dtype, device=Q.device)
        t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(float(temperature))
        return t.to(dtype=Q.dtype, device=Q.device).expand(Q.shape[0])

    def walls(self, Q: torch.Tensor) -> torch.Tensor:
        """The harmonic-wall prior ``(n_walkers,)`` kJ/mol (zero inside the data range)."""
        lo, hi, k = self.wall_lo.to(Q), self.wall_hi.to(Q), self.wall_k.to(Q)
        below = torch.clamp(lo - Q, min=0.0)
        above = torch.clamp(Q - hi, min=0.0)
        below = torch.where(torch.isfinite(lo), below, torch.zeros_like(below))
        above = torch.where(torch.isfinite(hi), above, torch.zeros_like(above))
        return 0.5 * (k * (below**2 + above**2)).sum(-1)

    def forward(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """``V(Q)`` (or ``V(Q, T)``): ``Q (n_walkers, n_cg)`` -> ``(n_walkers,)`` kJ/mol.

        ``temperature`` (K; scalar or ``(n_walkers,)``) is used only by a temperature-conditioned model.
        """
        if Q.dim() != 2 or Q.shape[1] != self.n_cg:
            fail("Q", f"has shape {tuple(Q.shape)}, expected (n_walkers, {self.n_cg})", "pass CG coordinates")
        return self.member_energies(Q, temperature).mean(-1) + self.walls(Q) + self.support_prior(Q)

    def log_support(self, Q: torch.Tensor) -> torch.Tensor:
        """Log of the kernel density of the training data at ``Q``, ``(n_walkers,)`` (up to a constant)."""
        c, h = self.support_centres.to(Q), self.support_h.to(Q)
        delta = Q[:, None, :] - c[None]
        delta = torch.where(self.periodic_mask.to(Q.device), 2.0 * torch.sin(0.5 * delta), delta)
        return torch.logsumexp(self.support_logw.to(Q) - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)

    def support_prior(self, Q: torch.Tensor) -> torch.Tensor:
        """``1/2 k (l* - l(Q))^2`` where the data's log density ``l`` falls below ``l*`` (else 0), kJ/mol."""
        if self.support_bins == 0:
            return Q.new_zeros(Q.shape[0])
        gap = torch.clamp(self.support_level.to(Q) - self.log_support(Q), min=0.0)
        return 0.5 * self.support_k.to(Q) * gap**2

    def member_energies(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """Each ensemble member's network output ``(n_walkers, n_members)`` kJ/mol (walls not included)."""
        x = self.features(Q, temperature).to(self.net[0].weight.dtype)
        out = [self.net(x)] + [m(x) for m in self.members]
        return (self.kT * torch.cat(out, dim=-1)).to(Q.dtype)

    def gradient(self, Q: torch.Tensor, temperature=None, create_graph: bool = False) -> torch.Tensor:
        """``grad_Q V`` of shape ``(n_walkers, n_cg)``, kJ/mol per unit of each Q."""
        with torch.enable_grad():
            q = Q if Q.requires_grad else Q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(q, temperature).sum(), q, create_graph=create_graph)
        return g

    def at_temperature(self, temperature: float):
        """``Q -> V(Q, T)`` at a fixed temperature (K), for the sampler."""
        check_positive(temperature, "temperature", "K")
        return lambda Q: self(Q, temperature)
