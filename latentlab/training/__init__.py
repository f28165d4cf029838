"""Training CG potentials: one loop (:class:`Trainer`), three objectives.

- :class:`ForceMatching` — the main path: fit ``grad V`` to the mean-force targets
  (:func:`latentlab.forces.prepare_targets`; docs/theory.md section 3).
- :class:`RelativeEntropy` — fit the latent dynamics' marginal p(Q) to the data's (KL), from
  configurations alone or refining a force-matching model; exact grid quadrature for up to 3
  coordinates, persistent latent-Langevin walkers otherwise.
- :class:`TemperatureMatching` — ``V(Q, T)`` from data at several temperatures, force matching plus
  internal-energy matching ``V - T dV/dT = <U>_Q`` (sec. 3.3 of Bruce et al.).

``Trainer(objective, ...).fit(data, cg_map)`` returns a :class:`latentlab.model.CGModel`.
"""

from __future__ import annotations

import importlib

# Names are imported on first use (PEP 562) so that ``latentlab.training.defaults`` -- read by
# ``latentlab train --help`` -- can be imported without importing torch.
_EXPORTS = {"DEFAULTS": "defaults", "OBJECTIVE_DEFAULTS": "defaults", "Trainer": "trainer", "TrainResult": "trainer",
            "Objective": "trainer", "ForceMatching": "force_matching", "force_matching_loss": "force_matching",
            "RelativeEntropy": "relative_entropy", "TemperatureMatching": "temperature",
            "split_frames": "splits", "time_block_split": "splits", "FrameSplit": "splits"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
