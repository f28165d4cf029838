"""Langevin dynamics directly in the CG (latent) space (docs/theory.md section 4)."""

from latentlab.dynamics.langevin import LangevinState, LatentLangevin, latent_potential
from latentlab.dynamics.statistics import integrated_autocorrelation_time, mean_and_stderr

__all__ = ["LangevinState", "LatentLangevin", "latent_potential", "integrated_autocorrelation_time", "mean_and_stderr"]
