"""The loop closed: a CG model trained on a flow's weighted samples in its slow latent, checked against the flow.

The flow's reweighted samples give the equilibrium marginal ``p(z)`` of its slow latent.  A potential
``V(z)`` trained on them (``latentlab train DATA --map flow:FLOW``) and run with latent Langevin
(``latentlab simulate``) should reproduce it (``latentlab compare SIM --reference DATA``, which honours the
data set's weights).  Latent Langevin crosses barriers of many kT rarely, so within a short run the
populations of the basins are set by where the walkers start (the model's start points are a resample of
the data by weight, so that is the equilibrium distribution); within each basin the dynamics relaxes to
``V``.  :func:`model_marginal_samples` checks the rest, the relative free energy of the basins: it draws
independent samples from the model's stationary density ``exp(-V / kT) det A^{-1/2}`` (the marginal of
``exp(-H / kT)`` with ``H = 1/2 P^T A P + V``, docs/theory.md section 2) by quadrature on a grid, which
:func:`latentlab.compare.compare_latent` scores like a simulation.
"""

from __future__ import annotations

import numpy as np
import torch

from latentlab.validation import fail

#: Grid points per coordinate of the quadrature (n_cg = 1, 2, 3).
GRID_POINTS = {1: 2000, 2: 200, 3: 60}


def model_log_density(model, Q: torch.Tensor) -> torch.Tensor:
    """Unnormalised log stationary density of latent Langevin for ``model``: ``-V / kT - 1/2 ln det A``.

    Parameters
    ----------
    model : CGModel
        With the ``consistent`` convention (the one whose dynamics samples ``p(Q)``).
    Q : tensor, shape=(n, n_cg)

    Returns
    -------
    torch.Tensor, shape=(n,), float64
    """
    if model.convention != "consistent":
        fail("model", f"has the {model.convention!r} convention", "train with --convention consistent")
    q = Q.to(torch.float64)
    p = next(model.potential.parameters(), None)
    qv = q if p is None else q.to(p.dtype)
    out = []
    with torch.no_grad():
        for s in range(0, q.shape[0], 8192):
            v = model.energy(qv[s:s + 8192]).to(torch.float64)
            out.append(-v / model.kT - 0.5 * model.mass.logdet(q[s:s + 8192]).to(torch.float64))
    return torch.cat(out)


def model_marginal_samples(model, reference, n: int, seed: int = 0, points: int | None = None,
                           pad: float = 0.05) -> np.ndarray:
    """Independent samples of the model's stationary marginal, by quadrature on a grid over the reference.

    Parameters
    ----------
    model : CGModel
    reference : array, shape=(n_frames, n_cg)
        Latent states whose box (widened by ``pad`` of its range per side, cut to the map's bounds) is gridded.
    n : int
        Samples to draw.
    seed : int
    points : int, optional
        Grid points per coordinate (default :data:`GRID_POINTS`).

    Returns
    -------
    np.ndarray, shape=(n, n_cg), float64
        Cell centres drawn with the cells' probabilities, jittered uniformly inside the cell.
    """
    from latentlab.binning import cell_centres, latent_box

    r = torch.as_tensor(np.asarray(reference, dtype=np.float64))
    k = r.shape[1]
    m = int(points or GRID_POINTS.get(k, 0))
    if m < 2:
        fail("reference", f"has {k} coordinates; quadrature needs at most 3", "compare a simulation instead")
    lo, hi = latent_box(r, model.periodic, model.bounds, pad)
    lo, hi = torch.as_tensor(lo, dtype=torch.float64), torch.as_tensor(hi, dtype=torch.float64)
    grid = cell_centres(lo, hi, m).to(torch.float64)  # (m^k, k)
    logp = model_log_density(model, grid)
    prob = torch.softmax(logp, 0)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.multinomial(prob, int(n), replacement=True, generator=gen)
    width = (hi - lo) / m
    jitter = (torch.rand(int(n), k, generator=gen, dtype=torch.float64) - 0.5) * width
    return (grid[idx] + jitter).numpy()
