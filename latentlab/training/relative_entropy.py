"""Relative entropy: make the latent dynamics' own distribution match the data.

The relative entropy of the CG model (Shell 2008) is ``S_rel = KL(p_data(Q) || p_model(Q))`` with
``p_model(Q) = exp(-beta V_theta(Q)) det A(Q)^(-1/2) / Z``, the marginal that latent Langevin with
``H = 1/2 P^T A P + V_theta`` samples (docs/theory.md section 2).  A(Q) does not depend on theta, so

    d S_rel / d theta = beta ( <dV/dtheta>_data - <dV/dtheta>_model ).

It needs configurations only, no forces: it trains on trajectories saved without forces, and it
refines a force-matching model where force matching is data-limited.  V learned this way is the
consistent latent potential by construction.  Two estimators of the model average:

``grid``
    For ``n_cg <= 3``: ``p_model`` on a regular grid over the data's range (the full circle for periodic
    coordinates), so ``<.>_model`` and ``ln Z`` are exact quadratures.  The loss is the negative
    log-likelihood ``beta mean V(Q_data) + ln Z`` (nats per frame), and the held-out time blocks'
    negative log-likelihood is a true validation loss for early stopping.
``sampler``
    Any ``n_cg``: persistent walkers of the latent sampler itself, advanced ``steps_per_iteration``
    steps with the current V between updates (persistent contrastive divergence; Tieleman 2008), and
    each iteration a fraction ``restart_fraction`` of them restarted on random training frames, so that
    barriers cannot starve data regions of walkers (a correct model keeps data-distributed walkers
    data-distributed: the fixed point stays exact).  The monitor is the JS divergence between the
    walkers' recent positions and the validation frames.

One "epoch" of the :class:`~latentlab.training.Trainer` is one parameter update here.

References
----------
Shell, J. Chem. Phys. 129, 144108 (2008): the relative entropy of coarse-grained models.
Tieleman, ICML (2008): persistent contrastive divergence.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from latentlab.binning import cell_centres, latent_box
from latentlab.training.defaults import OBJECTIVE_DEFAULTS
from latentlab.training.force_matching import build_model
from latentlab.training.trainer import Objective
from latentlab.validation import check_positive, fail

ESTIMATORS = ("auto", "grid", "sampler")

#: Grid points per coordinate of the ``grid`` estimator by number of coordinates.
GRID_POINTS = {1: 400, 2: 120, 3: 36}

#: Learning rates by estimator and start (measured on alanine dipeptide phi/psi, grid-exact JS ratio:
#: grid from scratch 31 -> 0.47 with 5e-3 (1.6 with 5e-4 after 300 iterations); grid refining a
#: force-matching model 0.28 -> 0.25 with 5e-4 (0.33 with 5e-3); sampler refining 1.78 -> 1.27 with
#: 1e-4 (11 with 5e-4: its gradient is noisy, and Adam turns noise into steps of size lr).
DEFAULT_LR = {("grid", True): 5e-3, ("grid", False): 5e-4, ("sampler", True): 1e-4, ("sampler", False): 1e-4}


def quadrature_grid(cg_map, Q: torch.Tensor, points: int | None = None, pad: float = 0.15) -> torch.Tensor:
    """Cell centres ``(G, n_cg)`` of a regular grid covering the data ``Q`` (full circle for periodic coordinates).

    Non-periodic coordinates span the data range widened by ``pad`` times the range on each side, cut to
    the map's bounds (e.g. a cosine's [-1, 1]).  All cells have the same volume.
    """
    n = Q.shape[1]
    m = int(points or GRID_POINTS.get(n, 0))
    if m < 2:
        fail("estimator", f"a grid needs n_cg <= 3 (got {n})", "use estimator='sampler'")
    lo, hi = latent_box(Q, cg_map.periodic, cg_map.bounds, pad)
    return cell_centres(lo, hi, m)


class RelativeEntropy(Objective):
    """Minimise ``KL(p_data || p_model)`` of Q (see the module docstring).

    Parameters
    ----------
    estimator : {"auto", "grid", "sampler"}
        ``auto``: grid for ``n_cg <= 3``.
    start : CGModel, optional
        Model to refine (e.g. from force matching); its A(Q) is kept.  Default: an untrained model (a flat
        MLP plus the walls and data-support priors), for data without forces.
    grid_points : int, optional
        Grid points per coordinate (``grid``; default :data:`GRID_POINTS`).
    n_walkers, steps_per_iteration, burn_in, restart_fraction, dt, gamma, monitor_every : ``sampler`` settings
        (walkers start on training frames and run ``burn_in`` steps with the starting model first; the JS
        monitor is computed every ``monitor_every`` iterations).
    """

    kind = "relative-entropy"

    def __init__(self, estimator: str = "auto", start=None, grid_points: int | None = None, n_walkers: int = 512,
                 steps_per_iteration: int = 25, burn_in: int = 200, restart_fraction: float = 0.02,
                 dt: float = 0.002, gamma="auto", monitor_every: int = 10):
        if estimator not in ESTIMATORS:
            fail("estimator", f"unknown estimator {estimator!r}", f"use one of {', '.join(ESTIMATORS)}")
        for name, value in (("n_walkers", n_walkers), ("steps_per_iteration", steps_per_iteration),
                            ("monitor_every", monitor_every)):
            if int(value) < 1:
                fail(name, f"got {value}", "use a positive integer")
        if int(burn_in) < 0:
            fail("burn_in", f"got {burn_in}", "use 0 or more steps")
        if not 0.0 <= float(restart_fraction) <= 1.0:
            fail("restart_fraction", f"got {restart_fraction}", "use a fraction in [0, 1], e.g. 0.02")
        check_positive(dt, "dt", "ps")
        if start is not None and not hasattr(start.potential, "member_energies"):
            fail("start", f"a {start.kind} model cannot be refined", "start from a model trained by latentlab train")
        self.estimator, self.start = estimator, start
        self.grid_points, self.n_walkers, self.steps = grid_points, int(n_walkers), int(steps_per_iteration)
        self.burn_in, self.restart_fraction, self.dt, self.gamma = int(burn_in), float(restart_fraction), float(dt), gamma
        self.monitor_every = int(monitor_every)
        self._pending = None

    @property
    def defaults(self) -> dict:
        d = dict(OBJECTIVE_DEFAULTS[self.kind])
        d["lr"] = DEFAULT_LR[(self.estimator if self.estimator != "auto" else "grid", self.start is None)]
        d["dtype"] = torch.float64
        return d

    @property
    def early_stopping(self) -> bool:
        return self.estimator == "grid"

    def configure(self, datasets, cg_map) -> None:
        if self.estimator == "auto":
            self.estimator = "grid" if cg_map.n_cg <= 3 else "sampler"
        if self.estimator == "grid" and cg_map.n_cg > 3:
            fail("estimator", f"the grid estimator needs n_cg <= 3 (the map has {cg_map.n_cg})", "use estimator='sampler'")
        if self.start is not None and self.start.n_cg != cg_map.n_cg:
            fail("start", f"has {self.start.n_cg} coordinates but the map {cg_map.spec!r} has {cg_map.n_cg}",
                 "refine a model trained with the same map")

    def settings(self) -> dict:
        return {"estimator": self.estimator, "start": "scratch" if self.start is None else self.start.kind,
                "grid_points": self.grid_points, "n_walkers": self.n_walkers, "steps_per_iteration": self.steps,
                "burn_in": self.burn_in, "restart_fraction": self.restart_fraction, "dt": self.dt,
                "gamma": self.gamma, "monitor_every": self.monitor_every}

    # ------------------------------------------------------------------ set-up
    def prepare(self, trainer, datasets, cg_map, split) -> None:
        from latentlab.maps.mass_model import build_mass_model

        if len(datasets) != 1:
            fail("data", f"relative entropy takes one data set, got {len(datasets)}", "pass one data set")
        ds = datasets[0]
        self.temperature, self.beta = ds.temperature, 1.0 / ds.kT
        self.Q = cg_map.map_frames(ds.positions).to(device=trainer.device_, dtype=trainer.dtype)
        self.w = None if ds.weights is None else torch.as_tensor(ds.weights, dtype=trainer.dtype, device=trainer.device_)
        self.train_idx, self.val_idx = split.train.to(trainer.device_), split.validation.to(trainer.device_)
        self.Q_fit = self.Q[split.fit.to(trainer.device_)]
        self.w_fit = None if ds.weights is None else ds.weights[split.fit.numpy()]
        self.mass = self.start.mass if self.start is not None else build_mass_model(cg_map, ds.positions, ds.masses,
                                                                                     weights=ds.weights)
        if self.estimator == "grid":
            grid = quadrature_grid(cg_map, self.Q.cpu(), self.grid_points)
            logdet = torch.cat([self.mass.logdet(grid[s:s + 8192]) for s in range(0, grid.shape[0], 8192)])
            self.grid = grid.to(device=trainer.device_, dtype=trainer.dtype)
            self.grid_logdet = logdet.to(device=trainer.device_, dtype=trainer.dtype)
        self.prior_train = self.prior_val = None
        self._periodic, self._last_epoch = cg_map.periodic, trainer.epochs - 1
        self.recent: list[np.ndarray] = []
        self.monitor = float("nan")

    def initial_potential(self, trainer):
        from latentlab.potentials.network import CGPotential

        if self.start is not None:
            return copy.deepcopy(self.start.potential)
        cg_map = trainer.cg_map
        pot = CGPotential.from_data(self.Q_fit.double().cpu(), periodic=cg_map.periodic, temperature=self.temperature,
                                    hidden=trainer.hidden, names=cg_map.names, units=cg_map.units, support=True)
        with torch.no_grad():  # start from the priors alone: a zero last layer makes the MLP flat
            pot.net[-1].weight.zero_()
            pot.net[-1].bias.zero_()
        return pot

    def _priors(self, potential, q: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([potential.prior_energy(q[s:s + 8192]) for s in range(0, q.shape[0], 8192)])

    def begin(self, trainer, module, resumed) -> None:
        pot = module["potential"]
        self.prior_train, self.prior_val = self._priors(pot, self.Q[self.train_idx]), self._priors(pot, self.Q[self.val_idx])
        if self.estimator == "grid":
            # log-weight of each grid cell without the MLP: -beta priors - 1/2 ln det A
            self.grid_fixed = -self.beta * self._priors(pot, self.grid) - 0.5 * self.grid_logdet
            return
        from latentlab.dynamics.langevin import LatentLangevin
        from latentlab.simulation.simulation import auto_gamma
        from latentlab.units import KB

        self.frozen = copy.deepcopy(pot).requires_grad_(False).eval()
        gen = torch.Generator().manual_seed(trainer.seed)
        q0 = self.Q_fit[torch.randint(0, self.Q_fit.shape[0], (self.n_walkers,), generator=gen).to(self.Q.device)]
        gamma = auto_gamma(self.mass, q0) if self.gamma == "auto" else float(self.gamma)
        self.gamma_used = gamma
        cg_map = trainer.cg_map
        self.sampler = LatentLangevin(self.frozen, self.mass, KB * self.temperature, self.dt, gamma,
                                      periodic=cg_map.periodic, bounds=cg_map.bounds, device=self.Q.device,
                                      dtype=trainer.dtype, seed=trainer.seed)
        if self._pending is not None:
            p = self._pending
            self.frozen.load_state_dict(pot.state_dict())
            self.state = self.sampler.init(p["walkers"].to(self.Q.device))
            self.state.P = p["momenta"].to(self.Q.device)
            self.state.counters = dict(p["counters"])
            self.sampler.generator.set_state(p["generator"])
            self.recent = [r.numpy() for r in p["recent"]]
            self.monitor = float(p["monitor"])
        else:
            self.state = self.sampler.init(q0)
            self.sampler.step(self.state, self.burn_in)

    # ------------------------------------------------------------------ iterations
    def _mlp(self, potential, q):
        """The trainable part of V (the priors are fixed and precomputed), kJ/mol."""
        return potential.member_energies(q).mean(-1)

    def _mean(self, values, idx):
        if self.w is None:
            return values.mean()
        w = self.w[idx]
        return (values * w).sum() / w.sum()

    def batches(self, trainer, epoch, phase):
        self._gen = torch.Generator().manual_seed(trainer.seed * 1_000_003 + epoch)
        n = self.train_idx.numel()
        if n <= trainer.batch_size:
            return [torch.arange(n, device=self.Q.device)]
        return [torch.randint(0, n, (trainer.batch_size,), generator=self._gen).to(self.Q.device)]

    def loss(self, module, batch):
        pot = module["potential"]
        idx = self.train_idx[batch]
        data_term = self.beta * self._mean(self._mlp(pot, self.Q[idx]) + self.prior_train[batch], idx)
        if self.estimator == "grid":
            return data_term + torch.logsumexp(self.grid_fixed - self.beta * self._mlp(pot, self.grid), dim=0)
        self.sampler.step(self.state, self.steps)
        self.recent = (self.recent + [self.state.Q.detach().cpu().numpy()])[-self.monitor_every:]
        walkers = self.state.Q.detach()
        return data_term - self.beta * (self._mlp(pot, walkers) + self._priors(pot, walkers)).mean()

    def after_step(self, module, iteration) -> None:
        if self.estimator == "grid":
            return
        self.frozen.load_state_dict(module["potential"].state_dict())  # the walkers follow the current V
        q_next = self.state.Q.detach().clone()
        n_restart = int(round(self.restart_fraction * q_next.shape[0]))
        if n_restart:
            who = torch.randperm(q_next.shape[0], generator=self._gen)[:n_restart].to(q_next.device)
            pick = torch.randint(0, self.train_idx.numel(), (n_restart,), generator=self._gen).to(q_next.device)
            q_next[who] = self.Q[self.train_idx[pick]]
        # V changed: re-evaluate the cached V, grad V at the walkers (fresh momenta are a valid Gibbs step).
        counters = self.state.counters
        self.state = self.sampler.init(q_next)
        self.state.counters = counters

    def validate(self, module, epoch):
        pot = module["potential"]
        if self.estimator == "grid":
            with torch.no_grad():
                nll = self.beta * self._mean(self._mlp(pot, self.Q[self.val_idx]) + self.prior_val, self.val_idx)
                log_z = torch.logsumexp(self.grid_fixed - self.beta * self._mlp(pot, self.grid), dim=0)
            return float(nll + log_z), True, {}
        from latentlab.compare import compare_latent

        if (epoch + 1) % self.monitor_every == 0 or epoch == self._last_epoch:
            self.monitor = compare_latent(np.concatenate(self.recent), self.Q[self.val_idx].cpu().numpy(),
                                          periodic=self._periodic)["js_divergence"]
            return float(self.monitor), True, {}
        return float(self.monitor), False, {}

    def state_dict(self) -> dict:
        if self.estimator == "grid" or not hasattr(self, "state"):
            return {}
        return {"walkers": self.state.Q.detach().cpu(), "momenta": self.state.P.detach().cpu(),
                "counters": dict(self.state.counters), "generator": self.sampler.generator.get_state(),
                "recent": [torch.from_numpy(r) for r in self.recent], "monitor": self.monitor}

    def load_state_dict(self, state: dict) -> None:
        self._pending = state or None

    def finish(self, trainer, module, record):
        diagnostics = (self.sampler.diagnostics(self.state) if self.estimator == "sampler"
                       else {"grid_points": int(self.grid.shape[0])})
        extra = {"relative_entropy": {"estimator": self.estimator, "diagnostics": diagnostics}}
        if self.start is not None:
            extra["started_from"] = {k: self.start.training.get(k) for k in ("kind", "settings", "history",
                                                                           "best_val_loss", "method", "stopped")}
            extra["method"] = self.start.training.get("method")
        if self.estimator == "sampler":
            extra["relative_entropy"]["gamma"] = self.gamma_used
        return build_model(trainer, module["potential"], self.mass, record, convention="consistent",
                           temperature=self.temperature, start_Q=self.Q_fit, start_weights=self.w_fit, **extra)
