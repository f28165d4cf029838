"""Force matching: fit ``grad_Q V_theta`` to the frame-wise targets ``g(q)`` (docs/theory.md section 3).

    loss(theta) = mean_frames w_f mean_i ( s_i (d V_theta / d Q_i - g_i) / kT )^2

with ``s_i`` the standard deviation of coordinate i in the data (1 rad for periodic ones), i.e. the
mean squared error of the gradient with respect to standardised coordinates, in kT, and ``w_f`` the
frame weights (1 unless the data set carries weights).  The weights ``s_i`` do not change the minimiser
(the conditional mean of g, which is grad V; Noid et al. 2008), only how the optimiser balances
coordinates of different units.  The loss has a large irreducible part (the noise of g around its
conditional mean), so its absolute value says little; differences between epochs and models do.

The default loop (:data:`latentlab.training.defaults.OBJECTIVE_DEFAULTS`): an EMA of the weights is what
is validated and returned (with targets that are mostly noise, the last Adam iterate wanders; Polyak &
Juditsky 1992), and after the validation phase the same initial model is refit on all frames for the
epoch count that was best on the held-out blocks: with ~10^4 frames force matching is data-limited
(leaving 10 % of alanine dipeptide's blocks out changed its learned phi/psi distribution by several
noise floors).

References
----------
Noid et al., J. Chem. Phys. 128, 244114 (2008): multiscale coarse-graining / force matching.
Wang et al., ACS Cent. Sci. 5, 755 (2019): CGnet, neural force matching with priors.
"""

from __future__ import annotations

import torch

from latentlab.conventions import canonical
from latentlab.training.defaults import OBJECTIVE_DEFAULTS
from latentlab.training.trainer import Objective
from latentlab.validation import fail


def prior_gradient(potential, Q: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """``grad_Q`` of a potential's fixed priors (walls + data support) at ``Q``, ``(n_frames, n_cg)``.

    The priors do not depend on the weights, so training computes this once instead of every batch.
    """
    out = []
    for s in range(0, Q.shape[0], batch):
        with torch.enable_grad():
            q = Q[s:s + batch].detach().to(torch.float64).requires_grad_(True)
            e = potential.prior_energy(q)
            (gq,) = torch.autograd.grad(e.sum(), q) if e.requires_grad else (torch.zeros_like(q),)
        out.append(gq.to(Q.dtype))
    return torch.cat(out)


def force_matching_loss(potential, Q: torch.Tensor, g: torch.Tensor, scale: torch.Tensor, kT: float,
                        create_graph: bool = True, temperature=None, per_member: bool = False,
                        prior_grad: torch.Tensor | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared gradient error in standardised coordinates and kT (see the module docstring).

    ``per_member``: for an ensemble, the mean over members of each member's own loss (members are trained
    independently); otherwise the loss of the ensemble mean.  ``prior_grad`` (``(B, n_cg)``, from
    :func:`prior_gradient`): the priors' gradient precomputed, so only the networks are evaluated.
    ``weights`` (``(B,)``): frame weights.
    """
    k = getattr(potential, "n_members", 1)
    if per_member and k > 1:
        q = Q.detach().unsqueeze(0).expand(k, -1, -1).clone().requires_grad_(True)  # one copy per member
        e = torch.stack([potential.member_energies(q[i], temperature)[:, i] for i in range(k)])  # (K, B)
        if prior_grad is None:
            e = e + torch.stack([potential.prior_energy(q[i]) for i in range(k)])
        (grad,) = torch.autograd.grad(e.sum(), q, create_graph=create_graph)  # (K, B, N)
    else:
        q = Q.detach().requires_grad_(True)
        v = potential(q, temperature) if prior_grad is None else potential.member_energies(q, temperature).mean(-1)
        (grad,) = torch.autograd.grad(v.sum(), q, create_graph=create_graph)
    if prior_grad is not None:
        grad = grad + prior_grad
    err = (((grad - g) * scale / kT) ** 2).mean(-1)  # (..., B)
    if weights is None:
        return err.mean()
    return (err * weights).mean(-1).mean() / weights.mean()


def build_model(trainer, potential, mass, record: dict, *, convention: str, temperature: float, start_Q,
                temperatures=None, start_weights=None, **training):
    """The :class:`latentlab.model.CGModel` a trainer returns: its map, potential, A(Q), start points, record.

    Up to 2000 start points: every n-th frame of ``start_Q``, or, when the frames carry weights
    ``start_weights (n_frames,)`` (e.g. a flow's importance weights), a systematic resample with
    probabilities proportional to them, so that walkers start from the weighted (equilibrium) distribution.
    """
    from latentlab.model import CGModel

    cg_map = trainer.cg_map
    start = start_Q.detach().cpu().double()
    if start_weights is None:
        start = start[::max(1, start.shape[0] // 2000)]
    else:
        w = torch.as_tensor(start_weights, dtype=torch.float64).reshape(-1)
        cum = torch.cumsum(w, 0) / w.sum()
        n = min(2000, start.shape[0])
        idx = torch.searchsorted(cum, (torch.arange(n, dtype=torch.float64) + 0.5) / n).clamp_max(start.shape[0] - 1)
        start = start[idx]
    return CGModel(potential, mass, cg_map.coordinates, temperature, convention, cg_map.spec, cg_map.to_dict(),
                   start, temperatures, None, {**record, **training}, mass.consistency)


class ForceMatching(Objective):
    """Force matching of ``grad V`` to the mean-force targets (see the module docstring).

    Parameters
    ----------
    convention : {"consistent", "eq9", "pmf"}
        Which V is learned (:mod:`latentlab.conventions`); ``consistent`` is the one the dynamics needs.
    method : {"auto", "mass-weighted", "pseudo-inverse", "rigid-rotation"}
        Mean-force estimator (:func:`latentlab.forces.resolve_method`): ``auto`` takes the rigid rotation for
        dihedral maps (alanine dipeptide phi/psi: 4x and 28x less variance of g than mass-weighted;
        exact-density JS ratio 1.4-1.8 -> 0.25-0.48 over seeds), else mass-weighted.
    mass : MassModel, optional
        A(Q) for the log-det term and the model (default :func:`latentlab.maps.build_mass_model` of the data).
    """

    kind = "force-matching"
    defaults = OBJECTIVE_DEFAULTS["force-matching"]

    def __init__(self, convention: str = "consistent", method: str = "auto", mass=None):
        self.convention = canonical(convention)
        self.method = method
        self.mass = mass

    def settings(self) -> dict:
        return {"convention": self.convention, "method": self.method}

    def prepare(self, trainer, datasets, cg_map, split) -> None:
        from latentlab.forces.targets import prepare_targets, resolve_method
        from latentlab.maps.mass_model import build_mass_model

        if len(datasets) != 1:
            fail("data", f"force matching takes one data set, got {len(datasets)}",
                 "pass one data set (several temperatures: TemperatureMatching)")
        ds = datasets[0]
        self.method_used, self.method_reason = resolve_method(self.method, cg_map, ds)
        trainer.emit({"event": "message", "message": f"mean-force estimator: {self.method_used} ({self.method_reason})"})
        mass = self.mass if self.mass is not None else build_mass_model(cg_map, ds.positions, ds.masses, weights=ds.weights)
        self.mass_used = mass
        trainer.emit({"event": "message", "message": "computing force-matching targets"})
        self.Q, self.g = prepare_targets(ds, cg_map, mass, self.convention, self.method_used, device=trainer.device_,
                                         dtype=trainer.dtype)
        self.weights = None if ds.weights is None else torch.as_tensor(ds.weights, dtype=trainer.dtype, device=trainer.device_)
        self.kT, self.temperature = ds.kT, ds.temperature
        self.split = split
        self.Q_fit = self.Q[split.fit.to(self.Q.device)].double().cpu()
        self.w_fit = None if ds.weights is None else ds.weights[split.fit.numpy()]
        self.g_prior = self.scale = None
        self.support = None
        if trainer.prior and trainer.support_prior:  # built (and tabulated) once, copied into every fresh model
            from latentlab.potentials.priors import SupportPrior

            self.support = SupportPrior.from_data(self.Q_fit, cg_map.periodic, ds.kT, weights=self.w_fit)

    def initial_potential(self, trainer):
        from latentlab.potentials.network import CGPotential

        cg_map = trainer.cg_map
        return CGPotential.from_data(self.Q_fit, periodic=cg_map.periodic, temperature=self.temperature,
                                     prior=trainer.prior, hidden=trainer.hidden, activation=trainer.activation,
                                     names=cg_map.names, units=cg_map.units, n_members=trainer.ensemble,
                                     support=self.support if self.support is not None else False)

    def _priors(self, potential) -> None:
        if self.g_prior is None:  # the priors are fixed: their gradient is computed once
            self.g_prior = prior_gradient(potential, self.Q)
            self.scale = potential.std.to(device=self.Q.device, dtype=self.Q.dtype)

    def batches(self, trainer, epoch, phase):
        idx = (self.split.train if phase == "validate" else self.split.fit).to(self.Q.device)
        gen = torch.Generator().manual_seed(trainer.seed * 1_000_003 + epoch + (0 if phase == "validate" else 500_000))
        order = idx[torch.randperm(idx.numel(), generator=gen).to(idx.device)]
        return list(order.split(trainer.batch_size))

    def _loss(self, potential, idx, create_graph=True, per_member=True):
        return force_matching_loss(potential, self.Q[idx], self.g[idx], self.scale, self.kT, create_graph=create_graph,
                                   per_member=per_member, prior_grad=self.g_prior[idx],
                                   weights=None if self.weights is None else self.weights[idx])

    def loss(self, module, batch):
        self._priors(module["potential"])
        return self._loss(module["potential"], batch)

    def validate(self, module, epoch):
        potential = module["potential"]
        self._priors(potential)
        idx = self.split.validation.to(self.Q.device)
        total = 0.0
        for s in range(0, idx.numel(), 4096):
            with torch.enable_grad():
                loss = self._loss(potential, idx[s:s + 4096], create_graph=False, per_member=False)
            total += float(loss) * min(4096, idx.numel() - s)
        return total / max(1, idx.numel()), True, {}

    def finish(self, trainer, module, record):
        return build_model(trainer, module["potential"], self.mass_used, record, convention=self.convention,
                           temperature=self.temperature, start_Q=self.Q_fit, start_weights=self.w_fit,
                           method=self.method_used,
                           method_reason=self.method_reason)


def force_parity(model, dataset, n_frames: int = 2000) -> dict:
    """The model's ``grad_Q V`` against the force-matching targets on up to ``n_frames`` evenly spaced frames.

    Uses the model's own map, A(Q), convention and mean-force estimator.  Returns ``{"predicted": list,
    "target": list}`` (flattened over frames and coordinates, kJ/mol per unit of Q) for a parity plot.
    """
    import numpy as np

    from latentlab.forces.targets import prepare_targets

    sub = dataset.select_frames(np.linspace(0, dataset.n_frames - 1, min(n_frames, dataset.n_frames)).astype(int))
    method = model.training.get("method") or "auto"
    Q, g = prepare_targets(sub, model.cg_map(dataset), model.mass, model.convention, method, dtype=torch.float64)
    grad = model.gradient(Q)
    return {"predicted": grad.detach().numpy().ravel().tolist(), "target": g.numpy().ravel().tolist()}
