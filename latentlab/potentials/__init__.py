"""CG potentials ``V(Q)`` in kJ/mol, as torch modules.

- :class:`CGPotential`: MLP ``V(Q)`` with periodic (sin/cos) and standardised features, fixed priors
  (harmonic walls, data support; :mod:`latentlab.potentials.priors`) and optional temperature
  conditioning ``V(Q, T)``.
- :class:`ExactPotential`: the exact latent potential of an analytic system in a convention.

A potential becomes a model to simulate inside a :class:`latentlab.model.CGModel`.
"""

from latentlab.potentials.exact import ExactPotential
from latentlab.potentials.network import CGPotential
from latentlab.potentials.priors import HarmonicWalls, SupportPrior

__all__ = ["CGPotential", "ExactPotential", "HarmonicWalls", "SupportPrior"]
