"""Training CG potentials.

- :func:`train_force_matching` — the main path: fit ``grad V`` to the mean-force
  targets of :func:`prepare_targets` (THEORY.md section 3).
- :func:`train_relative_entropy` — refine V so that the latent sampler's own samples
  match the data (persistent walkers; experimental, see its docstring).
- :func:`train_temperature_matching` — ``V(Q, T)`` from data at several temperatures,
  force matching plus internal-energy matching ``V - T dV/dT = <U>_Q`` (seed sec. 3.3).
"""

from latentlab.training.force_matching import (DEFAULTS, TrainResult, force_matching_loss, time_block_split,
                                               train_force_matching)
from latentlab.training.relative_entropy import train_relative_entropy
from latentlab.training.targets import prepare_targets, resolve_device
from latentlab.training.temperature import train_temperature_matching

__all__ = ["prepare_targets", "train_force_matching", "TrainResult", "force_matching_loss", "time_block_split",
           "resolve_device", "DEFAULTS", "train_relative_entropy", "train_temperature_matching"]
