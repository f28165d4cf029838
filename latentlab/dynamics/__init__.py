"""Langevin dynamics directly in the CG (latent) space (docs/theory.md section 4), and its overdamped limit."""

from latentlab.dynamics.brownian import BrownianDynamics
from latentlab.dynamics.langevin import FRICTION_UNITS, LangevinState, LatentLangevin, latent_potential
from latentlab.dynamics.statistics import integrated_autocorrelation_time, mean_and_stderr

__all__ = ["BrownianDynamics", "FRICTION_UNITS", "LangevinState", "LatentLangevin", "latent_potential",
           "integrated_autocorrelation_time", "mean_and_stderr"]
