"""Amber-type force fields in torch: the terms of an OpenMM ``System``, batched and differentiable.

:class:`AmberEnergy` reads the parameters of an OpenMM ``System`` built with
``NoCutoff`` and no constraints (latentlab's all-atom alanine dipeptide in
vacuum, Amber ff14SB) and evaluates

* ``HarmonicBondForce``: ``1/2 k (r - r0)^2``;
* ``HarmonicAngleForce``: ``1/2 k (theta - theta0)^2``;
* ``PeriodicTorsionForce``: ``k (1 + cos(n phi - phase))`` (proper and improper);
* ``NonbondedForce`` without cutoff: Coulomb ``q_i q_j / (4 pi eps0 r)`` and
  Lennard-Jones ``4 eps ((sigma/r)^12 - (sigma/r)^6)`` over all pairs, with
  Lorentz-Berthelot combination rules, minus OpenMM's exceptions (1-2 and 1-3
  pairs excluded, 1-4 pairs scaled), which are taken verbatim from the System;
* ``CMMotionRemover``: no energy.

Any other force is refused with a pointer to :class:`~latentlab.energies.OpenMMEnergy`
(the exact bridge that evaluates any System through an OpenMM Context).

Why not a library: torchmd (the well-kept Amber-in-torch library) builds its
parameters from a prmtop through parmed and moleculekit and applies the
Amber 1-4 scale factors itself; latentlab's systems come from OpenMM
force-field XML as a ``System`` object, whose exception list is the ground
truth.  Reading the System directly gives the same energy as OpenMM to
rounding (tests/test_energies.py: |dU| < 1e-4 kJ/mol, force relative error
< 1e-6 in float64) with no extra dependency.

Units: nm, kJ/mol, radians, elementary charges.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentlab.energies.base import Energy
from latentlab.validation import fail

#: Coulomb constant 1/(4 pi eps0) in kJ/mol nm / e^2: N_A e^2 / (4 pi eps0) with CODATA 2018 constants
#: (e = 1.602176634e-19 C, eps0 = 8.8541878128e-12 F/m, N_A = 6.02214076e23 /mol), times 1e9 nm/m / 1e3 J/kJ.
#: OpenMM uses this value (openmm/internal/... ONE_4PI_EPS0 = 138.935456...).
ONE_4PI_EPS0 = 6.02214076e23 * 1.602176634e-19**2 / (4.0 * math.pi * 8.8541878128e-12) * 1e9 / 1e3

#: Distances below this (nm) count as this value: an overlap in an untrained flow's sample then gives a huge
#: but finite energy with a finite gradient instead of inf/NaN.  No physical configuration comes close.
R_MIN = 0.02


def _norm(d: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.clamp((d * d).sum(-1), min=R_MIN**2))


def bond_lengths(x: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``|x_j - x_i|`` for index pairs ``(n_pairs, 2)``; x ``(n_frames, n_atoms, 3)`` -> ``(n_frames, n_pairs)`` nm."""
    return _norm(x[:, pairs[:, 1]] - x[:, pairs[:, 0]])


def bond_angles(x: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
    """Angle i-j-k at j, radians in [0, pi], ``(n_frames, n_triples)`` (atan2 form: finite gradient everywhere)."""
    u = x[:, triples[:, 0]] - x[:, triples[:, 1]]
    v = x[:, triples[:, 2]] - x[:, triples[:, 1]]
    cross = torch.linalg.cross(u, v, dim=-1)
    return torch.atan2(torch.sqrt((cross * cross).sum(-1) + 1e-30), (u * v).sum(-1))


def dihedral_angles(x: torch.Tensor, quads: torch.Tensor) -> torch.Tensor:
    """Dihedral i-j-k-l in (-pi, pi], IUPAC sign convention (as OpenMM and mdtraj), ``(n_frames, n_quads)``."""
    b1 = x[:, quads[:, 1]] - x[:, quads[:, 0]]
    b2 = x[:, quads[:, 2]] - x[:, quads[:, 1]]
    b3 = x[:, quads[:, 3]] - x[:, quads[:, 2]]
    n1 = torch.linalg.cross(b1, b2, dim=-1)
    n2 = torch.linalg.cross(b2, b3, dim=-1)
    b2n = torch.sqrt((b2 * b2).sum(-1) + 1e-30)
    return torch.atan2(b2n * (b1 * n2).sum(-1), (n1 * n2).sum(-1))


class AmberEnergy(Energy):
    """Bonded + nonbonded energy of an OpenMM System (no cutoff, no constraints), in torch.

    Build it with :meth:`from_system`; call it on positions ``(n_frames, n_atoms, 3)``
    nm to get ``U (n_frames,)`` kJ/mol.  ``.double()`` for float64.

    Parameters
    ----------
    n_atoms : int
    bonds : dict with ``index (n, 2)``, ``r0 (n,)`` nm, ``k (n,)`` kJ/mol/nm^2
    angles : dict with ``index (n, 3)``, ``theta0 (n,)`` rad, ``k (n,)`` kJ/mol/rad^2
    torsions : dict with ``index (n, 4)``, ``periodicity (n,)``, ``phase (n,)`` rad, ``k (n,)`` kJ/mol
    pairs : dict with ``index (n, 2)``, ``qq (n,)`` e^2, ``sigma (n,)`` nm, ``epsilon (n,)`` kJ/mol
        Every interacting nonbonded pair once (exceptions already applied).
    """

    def __init__(self, n_atoms: int, bonds: dict, angles: dict, torsions: dict, pairs: dict):
        super().__init__()
        self.n_atoms = int(n_atoms)
        f64 = torch.float64
        for prefix, table in (("bond", bonds), ("angle", angles), ("torsion", torsions), ("pair", pairs)):
            for key, value in table.items():
                dtype = torch.long if key == "index" else f64
                self.register_buffer(f"{prefix}_{key}", torch.as_tensor(np.asarray(value), dtype=dtype))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_system(cls, system) -> "AmberEnergy":
        """Read the parameters of an OpenMM ``System``.

        Raises
        ------
        ValueError
            For constraints, virtual sites, a cutoff or periodic nonbonded method, or a force type that is not
            one of the four Amber terms (use :class:`latentlab.energies.OpenMMEnergy` for those systems).
        """
        import openmm
        import openmm.unit as u

        n = system.getNumParticles()
        if system.getNumConstraints():
            fail("system", f"has {system.getNumConstraints()} constraints",
                 "build it with constraints=None (the flow samples every degree of freedom), or use OpenMMEnergy")
        if any(system.isVirtualSite(i) for i in range(n)):
            fail("system", "has virtual sites", "use OpenMMEnergy for systems with virtual sites")
        bonds = {"index": [], "r0": [], "k": []}
        angles = {"index": [], "theta0": [], "k": []}
        torsions = {"index": [], "periodicity": [], "phase": [], "k": []}
        pairs = None
        for force in system.getForces():
            if isinstance(force, openmm.HarmonicBondForce):
                for i in range(force.getNumBonds()):
                    a, b, r0, k = force.getBondParameters(i)
                    bonds["index"].append((a, b))
                    bonds["r0"].append(r0.value_in_unit(u.nanometer))
                    bonds["k"].append(k.value_in_unit(u.kilojoule_per_mole / u.nanometer**2))
            elif isinstance(force, openmm.HarmonicAngleForce):
                for i in range(force.getNumAngles()):
                    a, b, c, t0, k = force.getAngleParameters(i)
                    angles["index"].append((a, b, c))
                    angles["theta0"].append(t0.value_in_unit(u.radian))
                    angles["k"].append(k.value_in_unit(u.kilojoule_per_mole / u.radian**2))
            elif isinstance(force, openmm.PeriodicTorsionForce):
                for i in range(force.getNumTorsions()):
                    a, b, c, d, per, phase, k = force.getTorsionParameters(i)
                    torsions["index"].append((a, b, c, d))
                    torsions["periodicity"].append(per)
                    torsions["phase"].append(phase.value_in_unit(u.radian))
                    torsions["k"].append(k.value_in_unit(u.kilojoule_per_mole))
            elif isinstance(force, openmm.NonbondedForce):
                pairs = cls._nonbonded_pairs(force, n)
            elif isinstance(force, openmm.CMMotionRemover):
                continue
            else:
                fail("system", f"has a {type(force).__name__}, which AmberEnergy does not evaluate",
                     "use latentlab.energies.OpenMMEnergy(system) for this system")
        if pairs is None:
            pairs = {"index": np.zeros((0, 2), int), "qq": [], "sigma": [], "epsilon": []}
        shapes = {"bonds": (bonds, 2), "angles": (angles, 3), "torsions": (torsions, 4)}
        for _, (table, width) in shapes.items():
            table["index"] = np.asarray(table["index"], dtype=np.int64).reshape(-1, width)
        return cls(n, bonds, angles, torsions, pairs)

    @staticmethod
    def _nonbonded_pairs(force, n: int) -> dict:
        import openmm
        import openmm.unit as u

        if force.getNonbondedMethod() != openmm.NonbondedForce.NoCutoff:
            fail("system", "uses a cutoff or periodic nonbonded method", "build it with nonbondedMethod=NoCutoff, or use OpenMMEnergy")
        q = np.empty(n)
        sig = np.empty(n)
        eps = np.empty(n)
        for i in range(n):
            qi, si, ei = force.getParticleParameters(i)
            q[i] = qi.value_in_unit(u.elementary_charge)
            sig[i] = si.value_in_unit(u.nanometer)
            eps[i] = ei.value_in_unit(u.kilojoule_per_mole)
        exc_index, exc_qq, exc_sig, exc_eps = [], [], [], []
        excluded = set()
        for k in range(force.getNumExceptions()):
            i, j, qq, s, e = force.getExceptionParameters(k)
            excluded.add((min(i, j), max(i, j)))
            qq, e = qq.value_in_unit(u.elementary_charge**2), e.value_in_unit(u.kilojoule_per_mole)
            if qq != 0.0 or e != 0.0:
                exc_index.append((i, j))
                exc_qq.append(qq)
                exc_sig.append(s.value_in_unit(u.nanometer))
                exc_eps.append(e)
        ii, jj = np.triu_indices(n, k=1)
        keep = np.array([(a, b) not in excluded for a, b in zip(ii, jj)], dtype=bool)
        ii, jj = ii[keep], jj[keep]
        index = np.concatenate([np.stack([ii, jj], 1), np.asarray(exc_index, dtype=np.int64).reshape(-1, 2)])
        return {"index": index,
                "qq": np.concatenate([q[ii] * q[jj], exc_qq]),
                "sigma": np.concatenate([0.5 * (sig[ii] + sig[jj]), exc_sig]),
                "epsilon": np.concatenate([np.sqrt(eps[ii] * eps[jj]), exc_eps])}

    # ------------------------------------------------------------------ terms
    def terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each term separately, ``(n_frames,)`` kJ/mol: bonds, angles, torsions, coulomb, lennard_jones."""
        dt = x.dtype
        r = bond_lengths(x, self.bond_index)
        e_bond = (0.5 * self.bond_k.to(dt) * (r - self.bond_r0.to(dt)) ** 2).sum(-1)
        th = bond_angles(x, self.angle_index)
        e_angle = (0.5 * self.angle_k.to(dt) * (th - self.angle_theta0.to(dt)) ** 2).sum(-1)
        phi = dihedral_angles(x, self.torsion_index)
        e_tors = (self.torsion_k.to(dt) * (1.0 + torch.cos(self.torsion_periodicity.to(dt) * phi
                                                             - self.torsion_phase.to(dt)))).sum(-1)
        d = bond_lengths(x, self.pair_index)  # (F, n_pairs)
        inv = 1.0 / d
        e_coul = (ONE_4PI_EPS0 * self.pair_qq.to(dt) * inv).sum(-1)
        s6 = (self.pair_sigma.to(dt) * inv) ** 6
        e_lj = (4.0 * self.pair_epsilon.to(dt) * (s6 * s6 - s6)).sum(-1)
        return {"bonds": e_bond, "angles": e_angle, "torsions": e_tors, "coulomb": e_coul, "lennard_jones": e_lj}

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        return sum(self.terms(positions).values())

    def bonded_pairs(self) -> np.ndarray:
        """Atom pairs of the harmonic bonds, ``(n_bonds, 2)``, and their equilibrium lengths via :attr:`bond_r0`."""
        return self.bond_index.cpu().numpy()
