"""Langevin dynamics directly in the CG (latent) space (docs/theory.md section 4), and its overdamped limit."""

from latentlab.dynamics.brownian import BrownianDynamics
from latentlab.dynamics.langevin import LangevinState, LatentLangevin, check_friction_model, latent_potential
from latentlab.dynamics.statistics import integrated_autocorrelation_time, mean_and_stderr
from latentlab.units import FRICTION_UNITS
from latentlab.validation import fail

#: The integrators by the name of their dynamics.
INTEGRATORS = {cls.dynamics: cls for cls in (LatentLangevin, BrownianDynamics)}


def check_dynamics(name: str) -> str:
    """``name`` if it names dynamics latentlab integrates (``"langevin"`` or ``"brownian"``), else a clear error."""
    if name not in INTEGRATORS:
        fail("dynamics", f"got {name!r}", f"use one of {', '.join(repr(k) for k in INTEGRATORS)}")
    return name


__all__ = ["INTEGRATORS", "check_dynamics", "check_friction_model", "BrownianDynamics", "FRICTION_UNITS",
           "LangevinState", "LatentLangevin", "latent_potential", "integrated_autocorrelation_time", "mean_and_stderr"]
