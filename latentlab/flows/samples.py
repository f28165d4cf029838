"""One-shot samples of a trained flow with importance weights, and reweighted estimates.

For samples ``y_i ~ q`` the importance weights towards the Boltzmann density
at the system's temperature are ``w_i ~ exp(-U(y_i)/kT) J(y_i) / q(y_i)``
(``J`` the rigid-frame factor of molecules).  Self-normalised estimates

    <f> = sum_i w_i f_i / sum_i w_i

are consistent for any observable; their standard error is the delta-method
value ``sqrt(sum_i wbar_i^2 (f_i - <f>)^2)`` with ``wbar = w / sum w``
(Owen, "Monte Carlo theory, methods and examples", 2013, ch. 9), and the
Kish effective sample size is ``(sum w)^2 / sum w^2``.  Energies here are the
exact, uncapped ones, evaluated in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latentlab.validation import fail


@dataclass
class FlowSamples:
    """Samples with everything needed to reweight them.

    Attributes
    ----------
    positions : np.ndarray, shape=(n_samples, n_atoms, 3), float64, nm
    slow : np.ndarray, shape=(n_samples, n_slow)
        The slow latent ``z`` of each sample (in ``[-B, B]``).
    log_q : np.ndarray, shape=(n_samples,)
        Log density of the flow at its coordinates.
    energies : np.ndarray, shape=(n_samples,), kJ/mol
    log_jacobian : np.ndarray, shape=(n_samples,)
    kT : float, kJ/mol
    forces : np.ndarray or None, shape=(n_samples, n_atoms, 3), kJ/mol/nm
    """

    positions: np.ndarray
    slow: np.ndarray
    log_q: np.ndarray
    energies: np.ndarray
    log_jacobian: np.ndarray
    kT: float
    forces: np.ndarray | None = None

    @property
    def n_samples(self) -> int:
        return int(self.positions.shape[0])

    @property
    def log_weights(self) -> np.ndarray:
        """``log w = -U/kT + log J - log q`` (unnormalised; -inf for non-finite energies), shape (n_samples,)."""
        lw = -self.energies / self.kT + self.log_jacobian - self.log_q
        return np.where(np.isfinite(lw), lw, -np.inf)

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights (sum 1), shape (n_samples,)."""
        lw = self.log_weights
        w = np.exp(lw - lw.max())
        return w / w.sum()

    @property
    def ess(self) -> float:
        """Kish effective sample size ``(sum w)^2 / sum w^2``."""
        w = self.weights
        return float(1.0 / (w**2).sum())

    @property
    def ess_fraction(self) -> float:
        return self.ess / self.n_samples

    def mean(self, values) -> tuple[float, float]:
        """Reweighted mean of ``values (n_samples,)`` and its standard error."""
        f = np.asarray(values, dtype=np.float64).reshape(-1)
        if f.shape[0] != self.n_samples:
            fail("values", f"has {f.shape[0]} entries for {self.n_samples} samples", "pass one value per sample")
        w = self.weights
        m = float((w * f).sum())
        return m, float(np.sqrt((w**2 * (f - m) ** 2).sum()))

    def populations(self, system) -> dict[str, tuple[float, float]]:
        """``{state: (population, standard error)}`` for the system's states."""
        values = system.state_values(torch.as_tensor(self.positions))
        return {name: self.mean(v.numpy()) for name, v in values.items()}

    def to_dataset(self, system, name: str = "", metadata: dict | None = None):
        """A :class:`latentlab.data.Dataset` with these positions, forces (when drawn), energies and weights.

        Frames with non-finite energies or forces are dropped (their weight is 0).  Samples drawn without
        forces give a data set without forces (enough for relative-entropy training and histograms).
        """
        from latentlab.data import Dataset

        ok = np.isfinite(self.energies) & np.isfinite(self.log_weights)
        if self.forces is not None:
            ok &= np.isfinite(self.forces).all(axis=(1, 2))
        if not ok.any():
            fail("samples", "have no frame with a finite energy", "train the flow longer")
        w = self.weights[ok]
        if not (w > 0).any():
            w = np.ones(ok.sum())
        meta = {"source": "flow samples", "ess_fraction": self.ess_fraction, "n_dropped": int((~ok).sum())}
        meta.update(metadata or {})
        is_molecule = hasattr(system, "frame")
        return Dataset.from_arrays(self.positions[ok], None if self.forces is None else self.forces[ok], masses=system.masses, temperature=system.temperature,
                                   energies=self.energies[ok], topology=system.topology, weights=w, name=name,
                                   check_units=is_molecule, metadata=meta, source="flow")


def draw_samples(flow, system, n: int, batch: int = 10000, forces: bool = False, seed: int | None = None,
                 device=None) -> FlowSamples:
    """Draw ``n`` samples from ``flow`` with exact float64 energies (and forces).

    Parameters
    ----------
    flow : StructuredFlow
    system : FlowSystem
    n : int
    batch : int
        Samples per chunk (memory).
    forces : bool
        Also compute ``F = -grad U`` (needed for a data set).
    seed : int, optional
        Seeds the torch RNG first (the global RNG state is restored afterwards).
    device : torch device, optional
        Where to sample (default: where the flow is).
    """
    if int(n) < 1:
        fail("n", f"got {n}", "ask for at least one sample")
    param = next(flow.parameters())
    device = torch.device(device) if device is not None else param.device
    flow = flow.to(device)
    system.energy.to(device)
    state = torch.get_rng_state()
    if seed is not None:
        torch.manual_seed(int(seed))
    out = {k: [] for k in ("positions", "slow", "log_q", "energies", "log_jacobian", "forces")}
    try:
        done = 0
        while done < n:
            m = min(int(batch), n - done)
            with torch.no_grad():
                y, log_q, z = flow.sample(m, return_latent=True)
            y64 = y.double()
            pos = system.positions(y64)
            if forces:
                e, f = system.energy.energy_and_forces(pos)
                out["forces"].append(f.cpu().numpy())
            else:
                with torch.no_grad():
                    e = system.energy(pos)
            out["positions"].append(pos.cpu().numpy())
            out["slow"].append(z.double().cpu().numpy())
            out["log_q"].append(log_q.double().cpu().numpy())
            out["energies"].append(e.double().cpu().numpy())
            out["log_jacobian"].append(system.log_jacobian(y64).cpu().numpy())
            done += m
    finally:
        if seed is not None:
            torch.set_rng_state(state)
    cat = {k: (np.concatenate(v) if v else None) for k, v in out.items()}
    return FlowSamples(cat["positions"], cat["slow"], cat["log_q"], cat["energies"], cat["log_jacobian"], system.kT,
                       cat["forces"])
