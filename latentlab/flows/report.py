"""What a trained flow gets right: reweighted state populations against exact or reference values, ESS, bonds.

:func:`flow_report` returns the dictionary that ``latentlab flow report --json``
prints.  Its keys are a public contract:

``ess_fraction``
    Kish ESS of the report's samples over their number.
``n_samples``
    Number of samples drawn.
``populations``
    ``{state: {"value", "stderr", "exact" | "reference" [, "reference_stderr"], "z"}}``; state names
    ``x1<0``/``x1>0`` (double well), ``mode0``, ``mode1``, ... (mixtures), ``C5``, ``C7eq``,
    ``alpha_R``, ``phi>0`` (alanine dipeptide).  ``z`` is ``(value - target) / sqrt(stderr^2 + reference_stderr^2)``.
``bond_score``
    Molecules only: fraction of bonds (over all samples, unweighted: what the generator produces) within
    10 % of the force field's equilibrium length.
``train_seconds``
    Wall time of training (summed over resumed runs).

Further keys: ``system``, ``temperature``, ``slow_dims``, ``steps``, ``batch``, ``stages``, ``tempering``,
``ess``, ``max_abs_z`` and, for the double well, ``corr_z_x1`` (Pearson correlation of the slow latent with x1
over the samples).
"""

from __future__ import annotations

import math

import numpy as np


def flow_report(trained, n: int = 100000, reference=None, seed: int = 0, batch: int = 10000, samples=None) -> dict:
    """Reweighted populations, ESS and (molecules) bond score of a :class:`~latentlab.flows.TrainedFlow`.

    Parameters
    ----------
    trained : TrainedFlow
    n : int
        Samples to draw (ignored when ``samples`` is given).
    reference : latentlab.data.Dataset, optional
        Reference data set for systems without exact populations (default: the built-in one).
    seed : int
    samples : FlowSamples, optional
        Use these samples instead of drawing new ones.
    """
    system = trained.system
    s = samples if samples is not None else trained.sample(n, seed=seed, batch=batch)
    pops = s.populations(system)
    exact = system.exact_populations()
    ref = None if exact is not None else system.reference_populations(reference)
    out_pops = {}
    zs = []
    for name, (value, err) in pops.items():
        entry = {"value": value, "stderr": err}
        if exact is not None:
            target, terr = exact[name], 0.0
            entry["exact"] = target
        elif ref is not None:
            target, terr = ref[name]
            entry["reference"] = target
            entry["reference_stderr"] = terr
        else:
            target = None
        if target is not None:
            denom = math.sqrt(err**2 + terr**2)
            entry["z"] = (value - target) / denom if denom > 0 else (0.0 if value == target else float("inf"))
            zs.append(abs(entry["z"]))
        out_pops[name] = entry
    train = trained.train or {}
    settings = trained.settings or {}
    report = {
        "system": system.name, "temperature": system.temperature, "slow_dims": trained.n_slow,
        "ess_fraction": s.ess_fraction, "ess": s.ess, "n_samples": s.n_samples, "populations": out_pops,
        "max_abs_z": max(zs) if zs else None,
        "train_seconds": float(train.get("train_seconds", float("nan"))), "steps": train.get("steps"),
        "batch": settings.get("batch"), "stages": train.get("stages"), "tempering": settings.get("tempering"),
    }
    if hasattr(system, "bond_score"):
        report["bond_score"] = system.bond_score(s.positions)
    if system.name == "double-well":
        report["corr_z_x1"] = float(np.corrcoef(s.slow[:, 0], s.positions[:, 0, 0])[0, 1])
    return report


def plot_report(trained, samples, out: str, reference=None) -> str:
    """Free energy along the slow latent (reweighted) and the system's own view; writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from latentlab.data.plotting import free_energy_1d, free_energy_2d
    from latentlab.io import atomic_output

    system = trained.system
    w = samples.weights
    z = samples.slow
    b = trained.bound
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    if z.shape[1] == 1:
        centers, f = free_energy_1d(z[:, 0], bins=80, range_=(-b, b), weights=w)
        ax.plot(centers, f, label="flow, reweighted")
        centers, f = free_energy_1d(z[:, 0], bins=80, range_=(-b, b))
        ax.plot(centers, f, "--", label="flow, raw")
        ax.set_xlabel("slow z0")
        ax.set_ylabel("F / kT")
        ax.legend()
    else:
        xe, ye, f = free_energy_2d(z[:, 0], z[:, 1], bins=60, range_=((-b, b), (-b, b)), weights=w)
        im = ax.imshow(f.T, origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="F / kT")
        ax.set_xlabel("slow z0")
        ax.set_ylabel("slow z1")
    ax.set_title("free energy along the slow latent")
    ax = axes[1]
    if system.name == "alanine-dipeptide":
        from latentlab.flows.systems import _phi_psi

        deg = 180.0 / math.pi
        phi, psi = _phi_psi(torch.as_tensor(samples.positions), system.phi_atoms, system.psi_atoms)
        xe, ye, f = free_energy_2d(phi.numpy() * deg, psi.numpy() * deg, bins=72, range_=((-180, 180), (-180, 180)),
                                   weights=w)
        im = ax.imshow(f.T, origin="lower", extent=(-180, 180, -180, 180), aspect="auto", cmap="viridis")
        fig.colorbar(im, ax=ax, label="F / kT (flow, reweighted)")
        from latentlab.data import load

        ds = load("alanine-dipeptide") if reference is None else reference
        rp, rs = _phi_psi(torch.as_tensor(ds.positions, dtype=torch.float64), system.phi_atoms, system.psi_atoms)
        ax.scatter(rp.numpy()[::10] * deg, rs.numpy()[::10] * deg, s=1, c="w", alpha=0.3, label="reference (every 10th)")
        ax.set_xlabel("phi / deg")
        ax.set_ylabel("psi / deg")
        ax.legend(loc="lower right", fontsize=7)
        ax.set_title("Ramachandran")
    else:
        x1 = samples.positions[:, 0, 0]
        lo, hi = np.quantile(x1, [0.0005, 0.9995])
        hist, edges = np.histogram(x1, bins=80, range=(lo, hi), weights=w, density=True)
        ax.plot(0.5 * (edges[1:] + edges[:-1]), hist, label="flow, reweighted")
        ref = getattr(system, "reference", None)
        if ref is not None and hasattr(ref, "marginal_x"):
            grid = np.linspace(lo, hi, 400)
            ax.plot(grid, ref.marginal_x(grid), "k--", label="exact")
        ax.set_xlabel("x1 / nm")
        ax.set_ylabel("density")
        ax.legend()
        ax.set_title("marginal of the first coordinate")
    fig.tight_layout()
    with atomic_output(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return out
