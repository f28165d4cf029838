"""Temperature-conditioned training with internal-energy matching (sec. 3.3 of Bruce et al.).

A model ``W(theta, T, Q)`` (a :class:`latentlab.potentials.CGPotential` with ``temperature_conditioning``)
is fit to data at several temperatures with two terms:

* force matching at each temperature, with that temperature's targets ``g(q; T)``;
* internal-energy matching: ``U_int(Q, T) = W - T dW/dT`` is fit to the frames' potential energies ``E``
  (the conditional mean of E given Q and T is what it can reach):
  ``|| (W - T dW/dT + b) - E ||^2 / kT_ref^2`` with a learnt offset ``b`` (energies have an arbitrary zero).

Why ``W - T dW/dT`` is the internal energy: with ``A_pmf = -kT ln p(Q)``, ``d(A_pmf / T) / d(1/T) = <U>_Q``
up to a Q-independent constant, i.e. ``A_pmf - T dA_pmf/dT = <U>_Q``.  The log-det term of the latent
potential, ``c kT ln det A(Q)``, is linear in T and drops out of ``V - T dV/dT``, so the same expression
holds for V in any convention.

The result is one model that can be simulated at any temperature between (and a little beyond) the
training temperatures: ``latentlab simulate MODEL --temperature 325``.
"""

from __future__ import annotations

import torch
from torch import nn

from latentlab.conventions import canonical
from latentlab.training.defaults import OBJECTIVE_DEFAULTS
from latentlab.training.force_matching import build_model
from latentlab.training.splits import split_frames
from latentlab.training.trainer import Objective
from latentlab.units import KB
from latentlab.validation import fail

#: The built-in data sets at 300, 350 and 400 K.
DEFAULT_SETS = ("alanine-dipeptide", "alanine-dipeptide-350K", "alanine-dipeptide-400K")


class TemperatureMatching(Objective):
    """Force matching at every temperature plus internal-energy matching (see the module docstring).

    Parameters
    ----------
    energy_weight : float
        Weight of the energy term relative to force matching (both in kT^2).
    convention, method : as in :class:`~latentlab.training.ForceMatching`.

    The data (``Trainer.fit``) are two or more data sets with forces and potential energies at different
    temperatures, sharing the map; the model's reference temperature is the lowest one.
    """

    kind = "temperature-matching"
    defaults = OBJECTIVE_DEFAULTS["temperature-matching"]

    def __init__(self, energy_weight: float = 0.01, convention: str = "consistent", method: str = "auto"):
        self.energy_weight = float(energy_weight)
        self.convention = canonical(convention)
        self.method = method

    def settings(self) -> dict:
        return {"energy_weight": self.energy_weight, "convention": self.convention, "method": self.method}

    def prepare(self, trainer, datasets, cg_map, split) -> None:
        from latentlab.forces.targets import prepare_targets, resolve_method
        from latentlab.maps.mass_model import build_mass_model

        if len(datasets) < 2:
            fail("data", f"got {len(datasets)} data set(s)", "give data at two or more temperatures")
        for ds in datasets:
            if not ds.has_energies or not ds.has_forces:
                fail("data", f"{ds.name!r} lacks energies or forces", "internal-energy matching needs both")
        temps = [float(ds.temperature) for ds in datasets]
        if len(set(temps)) < 2:
            fail("data", f"all data sets are at {temps[0]} K", "give data at different temperatures")
        ref = datasets[min(range(len(datasets)), key=lambda i: temps[i])]
        self.temperatures, self.temperature = temps, min(temps)
        self.method_used, self.method_reason = resolve_method(self.method, cg_map, ref)
        self.mass = build_mass_model(cg_map, ref.positions, ref.masses, weights=ref.weights)
        dev, dtype = trainer.device_, trainer.dtype
        parts = {"Q": [], "g": [], "T": [], "E": [], "val": [], "train": []}
        for ds in datasets:
            q, g = prepare_targets(ds, cg_map, self.mass, self.convention, self.method_used, device=dev, dtype=dtype)
            s = split if ds is datasets[0] else split_frames(ds.n_frames, trainer.val_fraction, trainer.n_blocks,
                                                              trainer.seed, trainer.holdout, ds.trajectory_slices())
            parts["Q"].append(q)
            parts["g"].append(g)
            parts["T"].append(torch.full((ds.n_frames,), float(ds.temperature), dtype=dtype, device=dev))
            parts["E"].append(torch.as_tensor(ds.energies, dtype=dtype, device=dev))
            for key, idx in (("val", s.validation), ("train", s.train)):
                mask = torch.zeros(ds.n_frames, dtype=torch.bool)
                mask[idx] = True
                parts[key].append(mask.to(dev))
        self.Q, self.g, self.T, self.E = (torch.cat(parts[k]) for k in ("Q", "g", "T", "E"))
        self.train_idx = torch.nonzero(torch.cat(parts["train"])).flatten()
        self.val_idx = torch.nonzero(torch.cat(parts["val"])).flatten()
        self.kT_ref = KB * self.temperature
        self.start_Q = parts["Q"][0]

    def initial_potential(self, trainer):
        from latentlab.potentials.network import CGPotential

        cg_map = trainer.cg_map
        fit = torch.cat([self.train_idx, self.val_idx])
        # No data-support prior: it is built at one temperature, and V(Q, T) must hold at all of them.
        pot = CGPotential.from_data(self.Q[fit].double().cpu(), periodic=cg_map.periodic, temperature=self.temperature,
                                    hidden=trainer.hidden, activation=trainer.activation, prior=trainer.prior,
                                    temperature_conditioning=True, names=cg_map.names, units=cg_map.units)
        self.scale = pot.std.to(device=self.Q.device, dtype=self.Q.dtype)
        return pot

    def extra_module(self, trainer):
        extra = nn.Module()
        extra.offset = nn.Parameter(torch.tensor(-float(self.E.mean()), dtype=torch.float64))
        return extra

    def batches(self, trainer, epoch, phase):
        gen = torch.Generator().manual_seed(trainer.seed * 1_000_003 + epoch)
        order = self.train_idx[torch.randperm(self.train_idx.numel(), generator=gen).to(self.train_idx.device)]
        return list(order.split(trainer.batch_size))

    def _terms(self, module, idx, create_graph=True):
        q = self.Q[idx].detach().requires_grad_(True)
        t = self.T[idx].detach().requires_grad_(True)
        v = module["potential"](q, t)
        grad_q, grad_t = torch.autograd.grad(v.sum(), (q, t), create_graph=create_graph)
        kT = KB * self.T[idx]
        fm = (((grad_q - self.g[idx]) * self.scale / kT[:, None]) ** 2).mean()
        energy = (((v - self.T[idx] * grad_t + module["extra"].offset - self.E[idx]) / self.kT_ref) ** 2).mean()
        return fm, energy, fm + self.energy_weight * energy

    def loss(self, module, batch):
        return self._terms(module, batch)[2]

    def validate(self, module, epoch):
        with torch.enable_grad():
            fm, energy, total = (float(x.detach()) for x in self._terms(module, self.val_idx, create_graph=False))
        return total, True, {"val_force_loss": fm, "val_energy_loss": energy}

    def finish(self, trainer, module, record):
        return build_model(trainer, module["potential"], self.mass, record, convention=self.convention,
                           temperature=self.temperature, start_Q=self.start_Q, temperatures=self.temperatures,
                           method=self.method_used, method_reason=self.method_reason,
                           energy_offset=float(module["extra"].offset.detach()))
