"""Potential energies in torch: batched over frames, differentiable, on any device.

Every energy is a :class:`Energy` (a ``torch.nn.Module``): positions
``(n_frames, n_atoms, 3)`` nm -> ``U (n_frames,)`` kJ/mol, forces
``F = -grad U`` by autograd.

* :class:`AmberEnergy` — bonded + nonbonded Amber terms read from an OpenMM
  ``System`` (no cutoff, no constraints): all-atom alanine dipeptide in vacuum.
* :class:`OpenMMEnergy` — any OpenMM ``System`` through a Context (exact
  oracle; fallback for implicit solvent, constraints, other force fields).
* :class:`DoubleWellEnergy`, :class:`GaussianMixtureEnergy` — the analytic
  flow benchmarks.
* :func:`linlog_cap` — lin-log cap of huge energies for training losses.
"""

from latentlab.energies.amber import AmberEnergy
from latentlab.energies.analytic import DoubleWellEnergy, FlatEnergy, GaussianMixtureEnergy, flat_to_positions
from latentlab.energies.base import Energy, linlog_cap
from latentlab.energies.openmm_bridge import OpenMMEnergy

__all__ = ["AmberEnergy", "DoubleWellEnergy", "Energy", "FlatEnergy", "GaussianMixtureEnergy", "OpenMMEnergy",
           "flat_to_positions", "linlog_cap"]
