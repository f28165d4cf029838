"""Training CG potentials.

- :func:`train_force_matching` — the main path: fit ``grad V`` to the mean-force
  targets of :func:`prepare_targets` (THEORY.md section 3).
- :func:`train_relative_entropy` — fit the latent dynamics' marginal p(Q) to the data's
  (KL), from configurations alone or refining a force-matching model; exact grid
  quadrature for up to 3 coordinates, persistent latent-Langevin walkers otherwise.
- :func:`train_temperature_matching` — ``V(Q, T)`` from data at several temperatures,
  force matching plus internal-energy matching ``V - T dV/dT = <U>_Q`` (seed sec. 3.3).
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562) so that ``latentlab.training.defaults`` -- read by
# ``latentlab train --help`` -- can be imported without importing torch.
_EXPORTS = {"DEFAULTS": "defaults", "TrainResult": "force_matching", "force_matching_loss": "force_matching",
            "time_block_split": "force_matching", "train_force_matching": "force_matching",
            "train_relative_entropy": "relative_entropy", "prepare_targets": "targets",
            "resolve_device": "targets", "train_temperature_matching": "temperature"}

__all__ = ["prepare_targets", "train_force_matching", "TrainResult", "force_matching_loss", "time_block_split",
           "resolve_device", "DEFAULTS", "train_relative_entropy", "train_temperature_matching"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
