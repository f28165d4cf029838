"""Any OpenMM System as a differentiable torch energy (the oracle, and the fallback for any system).

:class:`OpenMMEnergy` evaluates ``U`` and ``F = -grad U`` frame by frame in
an OpenMM ``Context`` and hands them to autograd through a
``torch.autograd.Function`` (the backward pass multiplies the stored forces
by the incoming gradient; no second OpenMM call).  It works for every
System OpenMM can evaluate (implicit solvent, constraints ignored as in any
energy evaluation, virtual sites placed by OpenMM), on the Reference platform
by default (double precision, deterministic).  It is exact but runs on the
CPU, one frame at a time; :class:`~latentlab.energies.AmberEnergy` is the
batched path for plain Amber systems.
"""

from __future__ import annotations

import numpy as np
import torch

from latentlab.energies.base import Energy
from latentlab.validation import fail


class _OpenMMFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, positions, bridge):
        energies, forces = bridge.evaluate(positions.detach().cpu().numpy())
        f = torch.as_tensor(forces, dtype=positions.dtype, device=positions.device)
        ctx.save_for_backward(f)
        return torch.as_tensor(energies, dtype=positions.dtype, device=positions.device)

    @staticmethod
    def backward(ctx, grad_output):
        (forces,) = ctx.saved_tensors
        return -grad_output[:, None, None] * forces, None


class OpenMMEnergy(Energy):
    """Potential energy of an OpenMM System, differentiable in torch.

    Parameters
    ----------
    system : openmm.System
    platform : str
        OpenMM platform name ("Reference" by default: double precision).
    properties : dict, optional
        Platform properties (e.g. ``{"Threads": "1"}`` for CPU).

    Notes
    -----
    Positions ``(n_frames, n_atoms, 3)`` nm go to OpenMM in float64; energies
    ``(n_frames,)`` kJ/mol and forces come back in the input's dtype and device.
    """

    def __init__(self, system, platform: str = "Reference", properties: dict | None = None):
        super().__init__()
        import openmm

        self.system = system
        self.n_atoms = system.getNumParticles()
        names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
        if platform not in names:
            fail("platform", f"{platform!r} is not available (available: {', '.join(names)})", "use 'Reference' or 'CPU'")
        self._integrator = openmm.VerletIntegrator(0.001)
        self._context = openmm.Context(system, self._integrator, openmm.Platform.getPlatformByName(platform),
                                       dict(properties or {}))

    def evaluate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Energies ``(n_frames,)`` kJ/mol and forces ``(n_frames, n_atoms, 3)`` kJ/mol/nm (numpy, float64)."""
        import openmm.unit as u

        x = np.asarray(positions, dtype=np.float64)
        energies = np.empty(x.shape[0])
        forces = np.empty_like(x)
        for i, frame in enumerate(x):
            self._context.setPositions(frame)
            state = self._context.getState(getEnergy=True, getForces=True)
            energies[i] = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
            forces[i] = state.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
        return energies, forces

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        return _OpenMMFunction.apply(positions, self)
