"""Exact latent potentials of the analytic systems, as torch modules (no training needed).

``V(Q) = A_pmf(Q) + c kT ln det A(Q)`` with the system's closed-form potential of mean force and
effective mass, ``c`` from the convention (:mod:`latentlab.conventions`).  Used to check samplers against
exact answers, and by the dashboard's "Use exact PMF" button.
"""

from __future__ import annotations

import torch
from torch import nn

from latentlab.conventions import canonical, logdet_coefficient
from latentlab.validation import check_positive, fail


class ExactPotential(nn.Module):
    """``V(Q)`` (kJ/mol) of an analytic system with a known ``pmf`` and ``effective_mass`` in latent space.

    Parameters
    ----------
    system : object
        An analytic system with ``name``, ``kT``, ``temperature``, ``parameters()``, ``pmf(Q)`` and
        ``effective_mass(Q)`` (e.g. :class:`latentlab.testing.ThreeAtomSystem`).
    convention : {"consistent", "eq9", "pmf"}
    """

    def __init__(self, system, convention: str = "consistent"):
        super().__init__()
        if not (hasattr(system, "pmf") and hasattr(system, "effective_mass")):
            fail("system", f"{type(system).__name__} has no closed-form PMF and effective mass in latent space",
                 "train a model for it instead")
        self.system = system
        self.convention = canonical(convention)
        self.coefficient = logdet_coefficient(self.convention)

    @property
    def temperature(self) -> float:
        return float(self.system.temperature)

    def forward(self, Q: torch.Tensor, temperature=None) -> torch.Tensor:
        v = self.system.pmf(Q)
        if self.coefficient != 0.0:
            v = v + self.coefficient * self.system.kT * torch.logdet(self.system.effective_mass(Q))
        return v

    def at_temperature(self, temperature: float) -> "ExactPotential":
        """The exact potential of the same system at ``temperature`` K (the PMF's entropic terms scale with kT)."""
        check_positive(temperature, "temperature", "K")
        params = {**self.system.parameters(), "temperature": float(temperature)}
        return ExactPotential(type(self.system)(**params), self.convention)

    def config(self) -> dict:
        return {"system": self.system.name, "parameters": self.system.parameters(), "convention": self.convention}

    @classmethod
    def from_config(cls, config: dict) -> "ExactPotential":
        from latentlab.data import analytic_system

        system = analytic_system(config["system"])
        return cls(type(system)(**config["parameters"]), config["convention"])
