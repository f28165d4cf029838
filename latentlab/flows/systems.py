"""Target systems of data-free flows: an energy, a temperature, coordinates, states and their exact/reference weights.

A :class:`FlowSystem` ties together what training and evaluation need:

* ``energy`` (a :class:`latentlab.energies.Energy`) and ``temperature`` (K);
* the flow's coordinates ``y`` (``dim`` numbers) and the way to positions
  ``(n, n_atoms, 3)`` nm and back: flat systems pad with zeros, molecules use a
  :class:`~latentlab.flows.geometry.RigidFrame` whose log-Jacobian enters the
  target density ``log p(y) = -U/kT + log J(y)``;
* named ``states`` (functions of positions with values in [0, 1]) with exact
  populations or populations from a reference data set;
* defaults for the architecture and training (:attr:`FlowSystem.defaults`).

Built-in systems (:func:`get_system`): ``double-well``, ``gaussian-mixture``,
``gaussian-mixture-20d``, ``alanine-dipeptide``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from latentlab.energies import AmberEnergy, DoubleWellEnergy, GaussianMixtureEnergy, flat_to_positions
from latentlab.units import KB
from latentlab.validation import check_positive, fail

SYSTEMS = ("double-well", "gaussian-mixture", "gaussian-mixture-20d", "alanine-dipeptide")

#: Training and architecture defaults shared by every system (each system overrides some).
#: The authors' double-well run uses initial_steps=5000 and delta_kl=0.1; with this relative KL rule the
#: steps shrink as the flow improves (180 stages to beta = 1 on the double well), so latentlab's defaults
#: take delta_kl=3, delta_beta=0.1 and 2000 initial steps: same ESS, ~6x fewer steps (docs/flows.md).
BASE_DEFAULTS = dict(
    slow_dims=1, batch=500, initial_steps=2000, steps=100, lr=1e-3, clip=10.0, beta0=0.01, delta_beta=0.1,
    delta_kl=3.0, n_weights=1000, layers=6, hidden=(32, 32), bins=8, bound=5.0, cond_hidden=(32, 32),
    cap=1.0e4, max_stages=1000, decoder="linear", fast_covariance="diagonal",
)


class FlowSystem:
    """Base class; see the module docstring.

    Attributes
    ----------
    name : str
    energy : latentlab.energies.Energy
    temperature : float, K
    dim : int
        Number of flow coordinates.
    n_atoms : int
    masses : np.ndarray, shape=(n_atoms,), amu
    topology : mdtraj.Topology
    state_names : list of str
    defaults : dict
    """

    name = ""
    state_names: list = []

    def __init__(self, energy, temperature: float, dim: int, n_atoms: int, masses, topology, defaults: dict):
        self.energy = energy
        self.temperature = check_positive(temperature, "temperature", "K")
        self.dim = int(dim)
        self.n_atoms = int(n_atoms)
        self.masses = np.asarray(masses, dtype=np.float64)
        self.topology = topology
        self.defaults = {**BASE_DEFAULTS, **defaults}

    @property
    def kT(self) -> float:
        """Thermal energy, kJ/mol."""
        return KB * self.temperature

    def config(self) -> dict:
        """Plain data that rebuilds the system with :func:`get_system`."""
        return {"name": self.name, "temperature": self.temperature}

    # ------------------------------------------------------------------ coordinates
    def positions(self, y: torch.Tensor) -> torch.Tensor:
        """Flow coordinates ``(..., dim)`` -> positions ``(..., n_atoms, 3)`` nm."""
        return flat_to_positions(y, self.n_atoms)

    def coordinates(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions ``(..., n_atoms, 3)`` nm -> flow coordinates ``(..., dim)``."""
        return positions.flatten(-2)[..., :self.dim]

    def log_jacobian(self, y: torch.Tensor) -> torch.Tensor:
        """Log-density factor of coordinates removed from the flow (0 for flat systems), shape ``y.shape[:-1]``."""
        return y.new_zeros(y.shape[:-1])

    def reduced_energy(self, y: torch.Tensor) -> torch.Tensor:
        """``U(positions(y)) / kT``, shape (n,)."""
        return self.energy(self.positions(y)) / self.kT

    # ------------------------------------------------------------------ states
    def state_values(self, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Membership ``(n,)`` in [0, 1] of every state, for positions ``(n, n_atoms, 3)``."""
        raise NotImplementedError

    def exact_populations(self) -> dict[str, float] | None:
        """Exact population of every state, or None when only a reference data set can say."""
        return None

    def reference_populations(self, dataset=None, n_blocks: int = 25) -> dict[str, tuple[float, float]] | None:
        """``{state: (population, standard error)}`` from a data set, or None (no reference)."""
        return None

    def make_decoder(self, n_slow: int, **options):
        """The decoder of a new flow for this system (see :mod:`latentlab.flows.model`)."""
        raise NotImplementedError


# ---------------------------------------------------------------------------- flat (analytic) systems


class FlatSystem(FlowSystem):
    """A system whose flow coordinates are the first ``dim`` flat position entries (padded with zeros)."""

    def __init__(self, energy, temperature, defaults, logits=None):
        from latentlab.reconstruct import placeholder_topology

        n_atoms = energy.n_atoms
        super().__init__(energy, temperature, energy.dim, n_atoms, np.full(n_atoms, 12.0),
                         placeholder_topology(n_atoms), defaults)
        self._logits = logits

    def make_decoder(self, n_slow: int, alpha: float | None = None, **options):
        from latentlab.flows.model import LinearDecoder

        if options.get("decoder") not in (None, "linear"):
            fail("decoder", f"got {options['decoder']!r} for an analytic system", "use 'linear'")
        if self._logits is not None and alpha is None:
            logits = torch.as_tensor(self._logits, dtype=torch.get_default_dtype())
        else:
            logits = float(3.0 if alpha is None else alpha) * torch.eye(self.dim)
        return LinearDecoder(logits)


class DoubleWellSystem(FlatSystem):
    """``U = x1^4/4 - 3 x1^2 + x1 + x2^2/2`` at ``kT = 1`` (Stupp & Koutsourelakis' double well).

    States ``x1<0`` and ``x1>0`` with exact populations 0.99165 and 0.00835.
    The decoder starts from the authors' logits ``[[0, 1], [0, 2]]``.
    """

    name = "double-well"
    state_names = ["x1<0", "x1>0"]

    def __init__(self, temperature: float | None = None):
        from latentlab.testing.double_well import flow_paper_double_well

        dw = flow_paper_double_well()
        if temperature is not None:
            dw.temperature = check_positive(temperature, "temperature", "K")
        self.reference = dw
        super().__init__(DoubleWellEnergy(dw), dw.temperature, dict(slow_dims=1), logits=[[0.0, 1.0], [0.0, 2.0]])

    def state_values(self, positions):
        x1 = positions[..., 0, 0]
        left = (x1 < 0).to(positions.dtype)
        return {"x1<0": left, "x1>0": 1.0 - left}

    def exact_populations(self):
        w = self.reference.mode_weights()
        return {"x1<0": float(w[0]), "x1>0": float(w[1])}


class MixtureSystem(FlatSystem):
    """A Gaussian mixture; state ``mode<k>`` is the posterior probability of component k (its mean is w_k exactly)."""

    def __init__(self, reference, energy, defaults, logits=None):
        self.reference = reference
        self.state_names = [f"mode{k}" for k in range(len(reference.mode_weights()))]
        super().__init__(energy, reference.temperature, defaults, logits)

    def state_values(self, positions):
        r = self.energy.responsibilities(self.coordinates(positions))
        return {name: r[..., k] for k, name in enumerate(self.state_names)}

    def exact_populations(self):
        return {name: float(w) for name, w in zip(self.state_names, self.reference.mode_weights())}


class GaussianMixture2DSystem(MixtureSystem):
    """latentlab's 2-D Gaussian mixture (:class:`latentlab.testing.GaussianMixture2D`, 300 K), on (x, y)."""

    name = "gaussian-mixture"

    def __init__(self, temperature: float | None = None):
        from latentlab.testing import GaussianMixture2D

        gm = GaussianMixture2D() if temperature is None else GaussianMixture2D(temperature=temperature)
        energy = GaussianMixtureEnergy(gm.weights, gm.means, gm.covariances, gm.kT)
        super().__init__(gm, energy, dict(slow_dims=2, decoder="linear"))


class GaussianMixture20DSystem(MixtureSystem):
    """The authors' 20-D mixture: 3 components on 10 slow coordinates, a conditional Gaussian on 10 fast ones."""

    name = "gaussian-mixture-20d"

    def __init__(self, temperature: float | None = None):
        from latentlab.testing.gaussian_mixture import ConditionalGaussianMixture

        cm = ConditionalGaussianMixture() if temperature is None else ConditionalGaussianMixture(temperature=temperature)
        energy = GaussianMixtureEnergy(cm.weights, cm.means, cm.covariances, cm.kT, cm.cond_matrix, cm.cond_std)
        super().__init__(cm, energy, dict(slow_dims=10, batch=500, initial_steps=3000, steps=200, beta0=0.001,
                                          delta_beta=0.05, delta_kl=1.0, n_weights=5000, layers=8, hidden=(40, 40),
                                          cond_hidden=(40, 40), bound=4.0),
                         logits=5.0 * np.eye(cm.dim))


# ---------------------------------------------------------------------------- molecules


class MoleculeSystem(FlowSystem):
    """A molecule in vacuum: an OpenMM System evaluated in torch, rigid-body motion removed.

    Parameters
    ----------
    energy : latentlab.energies.Energy
    temperature : float, K
    topology : mdtraj.Topology
    masses : array, shape=(n_atoms,), amu
    structure : array, shape=(n_atoms, 3), nm
        A reference structure (energy-minimised): centre of the internal coordinates, frame of the pseudo-atoms.
    slow_torsions : list of 4-tuples of int
        Torsions the slow latent dimensions start on (internal decoder), in order.
    bond_lengths : array, shape=(n_bonds,), nm, and bonds (n_bonds, 2): equilibrium lengths for the bond score.
    """

    def __init__(self, energy, temperature, topology, masses, structure, slow_torsions, bonds, bond_lengths, defaults):
        n = topology.n_atoms
        super().__init__(energy, temperature, 3 * n - 6, n, masses, topology, defaults)
        self.structure = np.asarray(structure, dtype=np.float64)
        self.slow_torsions = [tuple(int(i) for i in q) for q in slow_torsions]
        self.bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
        self.bond_lengths = np.asarray(bond_lengths, dtype=np.float64)
        from latentlab.flows.geometry import RigidFrame, build_zmatrix

        heavy = np.array([a.element is not None and a.element.symbol != "H" for a in topology.atoms])
        self.zmatrix = build_zmatrix(self.bonds, n, heavy)
        self.frame = RigidFrame(n, self.zmatrix.atoms)

    def positions(self, y):
        return self.frame.positions(y)

    def coordinates(self, positions):
        return self.frame.reduced(positions)

    def log_jacobian(self, y):
        return self.frame.log_jacobian(y)

    def bond_score(self, positions, fraction: float = 0.1) -> float:
        """Fraction of bonds (over frames and bonds) within ``fraction`` of their equilibrium length."""
        x = torch.as_tensor(positions, dtype=torch.float64)
        b = torch.as_tensor(self.bonds)
        r = (x[:, b[:, 1]] - x[:, b[:, 0]]).norm(dim=-1)
        r0 = torch.as_tensor(self.bond_lengths)
        return float(((r - r0).abs() <= fraction * r0).double().mean())

    def make_decoder(self, n_slow: int, decoder: str | None = None, alpha: float | None = None, **options):
        from latentlab.flows.geometry import internal_coordinates
        from latentlab.flows.model import InternalDecoder, PseudoAtomDecoder

        kind = decoder or self.defaults["decoder"]
        if kind == "pseudo-atoms":
            return PseudoAtomDecoder(self.frame, alpha=3.0 if alpha is None else alpha)
        if kind != "internal":
            fail("decoder", f"got {kind!r}", "use 'internal' or 'pseudo-atoms'")
        zm = self.zmatrix
        center = internal_coordinates(zm, torch.as_tensor(self.structure)[None])[0].numpy()
        slope = InternalDecoder.default_slopes(zm, center)
        slow = []
        for q in self.slow_torsions:
            pos = zm.torsion_position(q)
            if pos is None:
                fail("slow_torsions", f"torsion {q} is not a torsion of the Z-matrix", "pick torsions along the backbone")
            slow.append(pos)
        proper = [3 + 3 * k + 2 for k in np.nonzero(zm.proper)[0] if 3 + 3 * k + 2 not in slow]
        first = (slow + proper)[:n_slow]
        if len(first) < n_slow:
            fail("slow_dims", f"got {n_slow}, more than the {len(slow + proper)} rotatable torsions",
                 f"use at most {len(slow + proper)} slow dimensions with the internal decoder")
        for pos in first:  # a slow torsion spans most of the circle within the box [-B, B]
            slope[pos] = 1.5
        rest = [i for i in range(zm.dim) if i not in first]
        return InternalDecoder(zm, center, slope, first + rest, alpha=10.0 if alpha is None else alpha,
                               fold=self.torsion_folds())

    def symmetric_rotors(self) -> list[int]:
        """Z-matrix rows whose torsion turns a group of three hydrogens on one atom (a methyl group)."""
        hydrogen = np.array([a.element is not None and a.element.symbol == "H" for a in self.topology.atoms])
        nbr = {i: set() for i in range(self.n_atoms)}
        for i, j in self.bonds:
            nbr[int(i)].add(int(j))
            nbr[int(j)].add(int(i))
        rows = []
        for k, ((d, c, b, a), proper) in enumerate(zip(self.zmatrix.rows, self.zmatrix.proper)):
            group = nbr[int(c)] - {int(b)}
            if proper and len(group) == 3 and all(hydrogen[list(group)]) and hydrogen[d]:
                rows.append(k)
        return rows

    def torsion_folds(self) -> np.ndarray:
        """Symmetry number of every IC-vector entry: 3 for methyl rotors, 1 otherwise."""
        fold = np.ones(self.zmatrix.dim, dtype=np.int64)
        for k in self.symmetric_rotors():
            fold[3 + 3 * k + 2] = 3
        return fold


def _phi_psi(positions: torch.Tensor, phi_idx, psi_idx) -> tuple[torch.Tensor, torch.Tensor]:
    from latentlab.energies.amber import dihedral_angles

    q = torch.as_tensor([phi_idx, psi_idx], device=positions.device)
    ang = dihedral_angles(positions, q)
    return ang[:, 0], ang[:, 1]


class AlanineDipeptideSystem(MoleculeSystem):
    """All-atom alanine dipeptide in vacuum (Amber ff14SB, no cutoff, no constraints), 300 K by default.

    The same OpenMM System as the built-in data set (:func:`latentlab.data.generate.build_system`),
    evaluated by :class:`latentlab.energies.AmberEnergy`.  States (phi, psi in degrees):
    ``C5`` phi < -120, ``C7eq`` -120 < phi < 0, ``alpha_R`` phi < 0 and -90 < psi < -10, ``phi>0``.
    Reference populations: the built-in ``alanine-dipeptide`` data set (300 K), standard errors from
    25 time blocks.
    """

    name = "alanine-dipeptide"
    state_names = ["C5", "C7eq", "alpha_R", "phi>0"]

    def __init__(self, temperature: float | None = None):
        import mdtraj as md
        import openmm
        import openmm.unit as u

        from latentlab.data.generate import GenerateConfig, build_system

        temperature = 300.0 if temperature is None else temperature
        cfg = GenerateConfig(system="alanine-dipeptide", ns=1.0, out="unused.h5").resolved()
        omm_top, omm_pos, system, masses = build_system(cfg)
        topology = md.Topology.from_openmm(omm_top)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(omm_pos)
        openmm.LocalEnergyMinimizer.minimize(ctx, 1e-3)
        structure = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        del ctx
        energy = AmberEnergy.from_system(system)
        traj = md.Trajectory(structure[None], topology)
        self.phi_atoms = [int(i) for i in md.compute_phi(traj)[0][0]]
        self.psi_atoms = [int(i) for i in md.compute_psi(traj)[0][0]]
        self.openmm_system = system
        super().__init__(energy, temperature, topology, masses, structure, [self.phi_atoms, self.psi_atoms],
                         energy.bond_index.numpy(), energy.bond_r0.numpy(),
                         dict(slow_dims=2, decoder="internal", fast_covariance="full", batch=512, initial_steps=3000,
                              steps=500, lr=1e-3, beta0=0.05, delta_beta=0.1, delta_kl=1.0, n_weights=2000, layers=6,
                              hidden=(64, 64), cond_hidden=(64, 64), bins=8, bound=5.0))

    def state_values(self, positions):
        phi, psi = _phi_psi(positions, self.phi_atoms, self.psi_atoms)
        deg = 180.0 / math.pi
        phi, psi = phi * deg, psi * deg
        dt = positions.dtype
        return {"C5": (phi < -120).to(dt), "C7eq": ((phi > -120) & (phi < 0)).to(dt),
                "alpha_R": ((phi < 0) & (psi > -90) & (psi < -10)).to(dt), "phi>0": (phi > 0).to(dt)}

    def reference_populations(self, dataset=None, n_blocks: int = 25):
        from latentlab.data import load

        ds = load("alanine-dipeptide") if dataset is None else dataset
        if ds.n_atoms != self.n_atoms:
            fail("reference", f"has {ds.n_atoms} atoms, the system {self.n_atoms}", "pass an all-atom alanine dipeptide data set")
        values = self.state_values(torch.as_tensor(ds.positions, dtype=torch.float64))
        w = ds.frame_weights()
        out = {}
        for name, v in values.items():
            out[name] = block_mean_and_error(v.numpy(), w, ds.trajectory_slices(), n_blocks)
        return out


def block_mean_and_error(values: np.ndarray, weights: np.ndarray, slices, n_blocks: int = 25) -> tuple[float, float]:
    """Weighted mean and its standard error from ``n_blocks`` contiguous time blocks (split within trajectories).

    Each trajectory slice is cut into blocks in proportion to its length; the error is the standard deviation of
    the block means (weighted by block weight) over sqrt(n_blocks - 1) (Flyvbjerg & Petersen, J. Chem. Phys. 91,
    461, 1989).
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    mean = float((w * v).sum() / w.sum())
    total = sum(s.stop - s.start for s in slices)
    means, wsum = [], []
    for s in slices:
        nb = max(1, int(round(n_blocks * (s.stop - s.start) / total)))
        for edge in np.array_split(np.arange(s.start, s.stop), nb):
            if len(edge) and w[edge].sum() > 0:
                means.append((w[edge] * v[edge]).sum() / w[edge].sum())
                wsum.append(w[edge].sum())
    means, wsum = np.asarray(means), np.asarray(wsum)
    if len(means) < 2:
        return mean, float("nan")
    f = wsum / wsum.sum()
    var = (f * (means - mean) ** 2).sum() / (1.0 - (f**2).sum())  # unbiased weighted variance of block means
    return mean, float(np.sqrt(var * (f**2).sum()))


_CLASSES = {"double-well": DoubleWellSystem, "gaussian-mixture": GaussianMixture2DSystem,
            "gaussian-mixture-20d": GaussianMixture20DSystem, "alanine-dipeptide": AlanineDipeptideSystem}


def get_system(name: str, temperature: float | None = None) -> FlowSystem:
    """A built-in flow target by name (one of :data:`SYSTEMS`), optionally at another temperature (K)."""
    if name not in _CLASSES:
        fail("system", f"got {name!r}", f"use one of {', '.join(SYSTEMS)}")
    return _CLASSES[name](temperature)


def system_from_config(cfg: dict) -> FlowSystem:
    """Rebuild a system from :meth:`FlowSystem.config`."""
    return get_system(cfg["name"], cfg.get("temperature"))
