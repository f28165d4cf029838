"""Mean forces and force-matching targets (docs/theory.md section 3).

- :func:`local_pmf_gradient`, :func:`force_matching_target`: instantaneous estimators with any ``B J^T = I``
  (mass-weighted or pseudo-inverse);
- :func:`torsion_pmf_gradient` (:mod:`latentlab.forces.torsion`): rigid rotations for dihedral maps;
- :func:`prepare_targets`, :func:`resolve_method` (:mod:`latentlab.forces.targets`): the targets training uses;
- :mod:`latentlab.forces.constraints`: constraint-free forces on rigid groups.
"""

from latentlab.forces.mean_force import METHODS, force_matching_target, local_pmf_gradient
from latentlab.forces.targets import TARGET_METHODS, prepare_targets, resolve_device, resolve_method
from latentlab.forces.torsion import torsion_pmf_gradient

__all__ = ["METHODS", "TARGET_METHODS", "force_matching_target", "local_pmf_gradient", "prepare_targets",
           "resolve_device", "resolve_method", "torsion_pmf_gradient"]
