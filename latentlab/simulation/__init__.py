"""Latent Langevin simulations of CG models: the :class:`Simulation` facade, its reporters, SIM files.

- :class:`Simulation`: a :class:`latentlab.model.CGModel`, walkers and an integrator
  (:class:`latentlab.dynamics.LatentLangevin`); ``run(steps)`` with reporters.
- Reporters (:mod:`latentlab.simulation.reporters`): in-memory trajectories, SIM files, progress bars,
  live histograms with the JS divergence against a reference, callbacks.
- :func:`save_simulation` / :func:`load_simulation`: the ``latentlab simulate`` output.
"""

from latentlab.simulation.reporters import (CallbackReporter, HistogramReporter, ProgressReporter, SimFileReporter,
                                            TrajectoryReporter)
from latentlab.simulation.simfile import SIM_FORMAT, dataset_name, load_simulation, save_simulation
from latentlab.simulation.simulation import AUTO_FRICTION_RATE, Simulation, auto_gamma, start_points

__all__ = ["Simulation", "auto_gamma", "start_points", "AUTO_FRICTION_RATE", "TrajectoryReporter", "SimFileReporter",
           "ProgressReporter", "HistogramReporter", "CallbackReporter", "save_simulation", "load_simulation",
           "SIM_FORMAT", "dataset_name"]
