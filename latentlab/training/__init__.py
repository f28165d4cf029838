"""Training CG potentials.

- :func:`train_force_matching` — the main path: fit ``grad V`` to the mean-force
  targets of :func:`prepare_targets` (THEORY.md section 3).
"""

from latentlab.training.force_matching import (DEFAULTS, TrainResult, force_matching_loss, time_block_split,
                                               train_force_matching)
from latentlab.training.targets import prepare_targets, resolve_device

__all__ = ["prepare_targets", "train_force_matching", "TrainResult", "force_matching_loss", "time_block_split",
           "resolve_device", "DEFAULTS"]
