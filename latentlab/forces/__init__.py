"""Mean-force estimators and force-matching targets (THEORY.md section 3)."""

from latentlab.forces.mean_force import METHODS, force_matching_target, local_pmf_gradient

__all__ = ["METHODS", "force_matching_target", "local_pmf_gradient"]
