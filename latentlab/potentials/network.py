"""The neural CG potential ``V_theta(Q)``: an MLP whose inputs respect the map, plus fixed priors.

Inputs: a periodic coordinate (a dihedral) enters as ``(sin q, cos q)``, any other as
``(q - mean) / std`` with the mean and standard deviation of the training data, so one set of
hyper-parameters works for nm, rad and dimensionless coordinates alike.  Output:
``V = kT_ref * mean_members MLP(features) + walls(Q) + support(Q)`` in kJ/mol
(priors in :mod:`latentlab.potentials.priors`).

Temperature conditioning (Bruce et al., "Latent spaces for Langevin dynamics", sec. 3.3) adds the
feature ``(T - T_ref) / 100 K`` to the input, giving ``W(theta, T, Q)``.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from latentlab.potentials.priors import SUPPORT_BINS, HarmonicWalls, SupportPrior  # noqa: F401 (SUPPORT_BINS re-exported)
from latentlab.units import KB
from latentlab.validation import as_tensor, check_positive, fail

ACTIVATIONS = {"silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU}

#: Width of the temperature feature: (T - T_ref) / TEMPERATURE_SCALE, K.
TEMPERATURE_SCALE = 100.0


class CGPotential(nn.Module):
    """MLP potential ``V(Q)`` (kJ/mol) on CG coordinates, with fixed priors.

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
    temperature_conditioning : bool
        Add ``(T - T_ref)/100 K`` as an input: ``V(Q, T)``.
    names, units : sequence of str, optional
        Coordinate names and units.
    n_members : int
        Number of independently initialised MLPs whose mean is V (an ensemble; 1 = a single MLP).
    support_bins : int
        Size of the data-support prior's kernel table (0: none); filled by :meth:`from_data`.
    support_table : dict, optional
        Layout of the support prior's tabulated log density (:meth:`SupportPrior.table_config`).
    """

    def __init__(self, n_cg: int, *, periodic: Sequence[bool] | None = None, mean=None, std=None,
                 hidden: Sequence[int] = (128, 128, 128), activation: str = "silu", temperature: float = 300.0,
                 temperature_conditioning: bool = False, names: Sequence[str] | None = None,
                 units: Sequence[str] | None = None, n_members: int = 1, support_bins: int = 0,
                 support_table: dict | None = None):
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
        if int(n_members) < 1:
            fail("n_members", f"got {n_members}", "use 1 (a single MLP) or more (an ensemble)")
        self.hidden, self.activation, self.n_members = hidden, activation, int(n_members)
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
        self.walls = HarmonicWalls(n)
        self.support = SupportPrior(n, support_bins, self.periodic, support_table)
        n_in = sum(2 if p else 1 for p in self.periodic) + (1 if self.temperature_conditioning else 0)

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

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(cls, Q, *, periodic: Sequence[bool] | None = None, temperature: float = 300.0, prior: bool = True,
                  wall_range=None, support=False, support_quantile: float = 0.02, weights=None,
                  **kwargs) -> "CGPotential":
        """A model standardised to training coordinates ``Q (n_frames, n_cg)``, with its priors.

        ``prior``: walls at ``wall_range = (lo, hi)`` (arrays of shape (n_cg,)), by default the range of ``Q``
        (pass the range of all the data so that no data point is walled off); ``support``: also the
        data-support prior of ``Q`` (frame ``weights`` optional), or a :class:`SupportPrior` built already
        (trainers build it once and reuse it for every fresh model).
        """
        q = as_tensor(Q, "Q", dtype=torch.float64)
        if q.dim() != 2 or q.shape[0] < 2:
            fail("Q", f"has shape {tuple(q.shape)}", "pass CG coordinates of shape (n_frames, n_cg), n_frames >= 2")
        n = q.shape[1]
        per = [False] * n if periodic is None else [bool(p) for p in periodic]
        per_t = torch.tensor(per, dtype=torch.bool)
        mean = torch.where(per_t, torch.zeros(n, dtype=torch.float64), q.mean(0))
        std = torch.where(per_t, torch.ones(n, dtype=torch.float64), q.std(0))
        kT = KB * float(temperature)
        sup = None
        if prior and isinstance(support, SupportPrior):
            sup = copy.deepcopy(support)
        elif prior and support:
            sup = SupportPrior.from_data(q, per, kT, support_quantile, weights)
        model = cls(n, periodic=per, mean=mean, std=std, temperature=temperature,
                    support_bins=0 if sup is None else sup.n_bins,
                    support_table=None if sup is None else sup.table_config(), **kwargs)
        if prior:
            model.walls = HarmonicWalls.around(q, per, kT, wall_range)
        if sup is not None:
            model.support = sup
        return model

    def config(self) -> dict:
        """Constructor arguments (plain Python types) that rebuild this architecture; buffers come from the state dict."""
        return {"n_cg": self.n_cg, "periodic": list(self.periodic), "hidden": list(self.hidden),
                "activation": self.activation, "temperature": self.temperature,
                "temperature_conditioning": self.temperature_conditioning, "names": list(self.names),
                "units": list(self.units), "n_members": self.n_members, "support_bins": self.support.n_bins,
                "support_table": self.support.table_config()}

    @property
    def kT(self) -> float:
        """Reference thermal energy, kJ/mol."""
        return KB * self.temperature

    # ------------------------------------------------------------------ evaluation
    def features(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """Network input ``(n_walkers, n_features)`` from ``Q (n_walkers, n_cg)``: per coordinate ``(q - mean)/std``,
        or ``(sin q, cos q)`` for a periodic one, in coordinate order."""
        if not any(self.periodic):
            x = (Q - self.mean.to(Q)) / self.std.to(Q)
        elif all(self.periodic):  # (sin q_0, cos q_0, sin q_1, ...) in three operations
            x = torch.stack([torch.sin(Q), torch.cos(Q)], dim=-1).reshape(Q.shape[0], 2 * self.n_cg)
        else:
            parts = []
            for i, per in enumerate(self.periodic):
                q = Q[:, i]
                parts += [torch.sin(q), torch.cos(q)] if per else [(q - self.mean[i].to(q)) / self.std[i].to(q)]
            x = torch.stack(parts, dim=-1)
        if self.temperature_conditioning:
            t = self._temperature(temperature, Q)
            x = torch.cat([x, ((t - self.temperature) / TEMPERATURE_SCALE)[:, None]], dim=-1)
        return x

    def _temperature(self, temperature, Q):
        if temperature is None:
            return torch.full((Q.shape[0],), self.temperature, dtype=Q.dtype, device=Q.device)
        t = temperature if isinstance(temperature, torch.Tensor) else torch.tensor(float(temperature))
        return t.to(dtype=Q.dtype, device=Q.device).expand(Q.shape[0])

    def forward(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """``V(Q)`` (or ``V(Q, T)``): ``Q (n_walkers, n_cg)`` -> ``(n_walkers,)`` kJ/mol.

        ``temperature`` (K; scalar or ``(n_walkers,)``) is used only by a temperature-conditioned model.
        """
        if Q.dim() != 2 or Q.shape[1] != self.n_cg:
            fail("Q", f"has shape {tuple(Q.shape)}, expected (n_walkers, {self.n_cg})", "pass CG coordinates")
        return self.member_energies(Q, temperature).mean(-1) + self.prior_energy(Q)

    def energy_and_gradient(self, Q: torch.Tensor, temperature=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``V (W,)`` and ``grad_Q V (W, n_cg)`` without tracking: autograd through the networks only, the priors'
        gradients in closed form (the sampler's one evaluation per step)."""
        with torch.enable_grad():
            q = Q.detach().requires_grad_(True)
            v = self.member_energies(q, temperature).mean(-1)
            (g,) = torch.autograd.grad(v.sum(), q)
        vw, gw = self.walls.energy_and_gradient(Q)
        vs, gs = self.support.energy_and_gradient(Q)
        return v.detach() + vw + vs, g + gw + gs

    def prior_energy(self, Q: torch.Tensor) -> torch.Tensor:
        """Walls plus data-support prior, ``(n_walkers,)`` kJ/mol (independent of the weights)."""
        return self.walls(Q) + self.support(Q)

    def member_energies(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        """Each ensemble member's network output ``(n_walkers, n_members)`` kJ/mol (priors not included)."""
        x = self.features(Q, temperature).to(self.net[0].weight.dtype)
        out = self.net(x)
        if len(self.members):
            out = torch.cat([out] + [m(x) for m in self.members], dim=-1)
        return (self.kT * out).to(Q.dtype)

    def gradient(self, Q: torch.Tensor, temperature=None, create_graph: bool = False) -> torch.Tensor:
        """``grad_Q V`` of shape ``(n_walkers, n_cg)``, kJ/mol per unit of each Q."""
        with torch.enable_grad():
            q = Q if Q.requires_grad else Q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(q, temperature).sum(), q, create_graph=create_graph)
        return g

    def at_temperature(self, temperature: float) -> nn.Module:
        """``Q -> V(Q, T)`` at a fixed temperature (K) for a conditioned model; the model itself otherwise."""
        check_positive(temperature, "temperature", "K")
        return _AtTemperature(self, float(temperature)) if self.temperature_conditioning else self


class _AtTemperature(nn.Module):
    """A temperature-conditioned potential at one temperature: ``Q -> V(Q, T)``."""

    def __init__(self, potential: CGPotential, temperature: float):
        super().__init__()
        self.potential, self.temperature = potential, temperature

    def forward(self, Q: torch.Tensor) -> torch.Tensor:
        return self.potential(Q, self.temperature)

    def energy_and_gradient(self, Q: torch.Tensor):
        return self.potential.energy_and_gradient(Q, self.temperature)


def upgrade_state_dict(state: dict) -> dict:
    """State dict of a 0.1.0 model file (flat prior buffers) in the current layout (prior submodules)."""
    renames = {"wall_lo": "walls.lo", "wall_hi": "walls.hi", "wall_k": "walls.k", "support_centres": "support.centres",
               "support_logw": "support.logw", "support_h": "support.h", "support_level": "support.level",
               "support_k": "support.k", "periodic_mask": "support.periodic_mask"}
    return {renames.get(k, k): v for k, v in state.items()}
