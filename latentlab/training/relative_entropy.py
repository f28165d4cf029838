"""Relative-entropy training: make the latent dynamics' own distribution match the data.

The relative entropy of the CG model (Shell 2008) is ``S_rel = KL(p_data(Q) || p_model(Q))``
with ``p_model(Q) = exp(-beta V_theta(Q)) det A(Q)^(-1/2) / Z``, the marginal that latent
Langevin with ``H = 1/2 P^T A P + V_theta`` samples (THEORY.md section 2).  A(Q) does not
depend on theta, so

    d S_rel / d theta = beta ( <dV/dtheta>_data - <dV/dtheta>_model ).

It needs configurations only, no forces: it trains on trajectories saved without forces,
and it refines a force-matching model where force matching is data-limited.  V learned
this way is the consistent latent potential by construction (the sampler's marginal is
fitted directly).  Two estimators of the model average:

``grid``
    For ``n_cg <= 3``: ``p_model`` on a regular grid over the data's range (the full circle for
    periodic coordinates), so ``<.>_model`` and ``ln Z`` are exact quadratures.  The loss is the
    negative log-likelihood ``beta mean V(Q_data) + ln Z`` (in nats per frame), and the held-out
    time blocks' negative log-likelihood is a true validation loss for early stopping.
``sampler``
    Any ``n_cg``: persistent walkers of the latent sampler itself, advanced
    ``steps_per_iteration`` steps with the current V between updates (persistent
    contrastive divergence; Tieleman 2008), and each iteration a fraction
    ``restart_fraction`` of them restarted on random training frames.  The restarts
    keep walkers in every region the data visit even where barriers stop the dynamics
    from getting there between updates (without them, V grows wells in data regions the
    walkers never reach); they leave the fixed point exact, since a correct model keeps
    data-distributed walkers data-distributed.  The monitor is the JS divergence between
    the walkers' recent positions and the data.

Both write a checkpoint (``OUT.ckpt``) after every iteration and resume from it.

References
----------
Shell, J. Chem. Phys. 129, 144108 (2008): the relative entropy of coarse-grained models.
Tieleman, ICML (2008): persistent contrastive divergence.
"""

from __future__ import annotations

import copy
import math
import os
import time
from typing import Callable

import numpy as np
import torch

from latentlab.io import atomic_output
from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import save_model, versions
from latentlab.training.force_matching import (CHECKPOINT_FORMAT, TrainResult, checkpoint_path, finished_run,
                                               resume_checkpoint, time_block_split)
from latentlab.training.targets import resolve_device
from latentlab.validation import check_positive, fail

ESTIMATORS = ("auto", "grid", "sampler")

#: Grid points per coordinate of the ``grid`` estimator by number of coordinates.
GRID_POINTS = {1: 400, 2: 120, 3: 36}


def quadrature_grid(cg_map, Q: torch.Tensor, points: int | None = None, pad: float = 0.15) -> torch.Tensor:
    """Cell centres ``(G, n_cg)`` of a regular grid covering the data ``Q`` (full circle for periodic coordinates).

    Non-periodic coordinates span the data range widened by ``pad`` times the range on each side, cut
    to the map's bounds (e.g. a cosine's [-1, 1]).  All cells have the same volume, so plain sums
    over the centres are quadratures up to a constant factor.
    """
    n = Q.shape[1]
    m = int(points or GRID_POINTS.get(n, 0))
    if m < 2:
        fail("estimator", f"a grid needs n_cg <= 3 (got {n})", "use estimator='sampler'")
    axes = []
    for d in range(n):
        if cg_map.periodic[d]:
            lo, hi = -math.pi, math.pi
        else:
            qmin, qmax = float(Q[:, d].min()), float(Q[:, d].max())
            width = max(qmax - qmin, 1e-6)
            lo, hi = qmin - pad * width, qmax + pad * width
            bound = cg_map.bounds[d]
            if bound is not None:
                lo, hi = max(lo, float(bound[0])), min(hi, float(bound[1]))
        axes.append(lo + (torch.arange(m, dtype=torch.float64) + 0.5) * (hi - lo) / m)
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([t.reshape(-1) for t in mesh], dim=1)


def _scratch_model(ds, cg_map, spec, Q, seed, hidden=(128, 128, 128)) -> CGPotential:
    """An untrained model with the walls and data-support priors and the metadata a sampler needs."""
    from latentlab.simulation import mass_function

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = CGPotential.from_data(Q, periodic=cg_map.periodic, temperature=ds.temperature, hidden=hidden,
                                      names=cg_map.names, units=cg_map.units, support=True)
        with torch.no_grad():  # start from the priors alone: a zero last layer makes the MLP flat
            model.net[-1].weight.zero_()
            model.net[-1].bias.zero_()
    mass = mass_function(cg_map, ds)
    stride = max(1, Q.shape[0] // 2000)
    model.metadata = {
        "map": cg_map.spec or spec, "names": cg_map.names, "units": cg_map.units, "periodic": cg_map.periodic,
        "bounds": [None if b is None else [float(b[0]), float(b[1])] for b in cg_map.bounds],
        "temperature": float(ds.temperature), "kT": float(ds.kT), "convention": "consistent",
        "potential": "V(Q) with exp(-V/kT) det A(Q)^(-1/2) fitted to p(Q) (relative entropy)",
        "energy_unit": "kJ/mol", "mass_model": mass.to_dict(), "consistency": mass.consistency,
        "dataset": {"name": ds.name, "source": str(ds.source), "n_frames": int(ds.n_frames)},
        "start_Q": Q[::stride].detach().cpu().double(), "versions": versions(), "history": [],
    }
    return model


def train_relative_entropy(dataset, map_spec: str | None = None, *, model: CGPotential | None = None,
                           iterations: int = 300, estimator: str = "auto", lr: float | None = None,
                           batch_size: int = 4096, n_walkers: int = 512, steps_per_iteration: int = 25,
                           burn_in: int = 200, restart_fraction: float = 0.02, grid_points: int | None = None,
                           dt: float = 0.002, gamma="auto", val_fraction: float = 0.1, patience: int = 30,
                           hidden=(128, 128, 128), device="cpu", seed: int = 0, out: str | None = None,
                           resume: bool = False,
                           callback: Callable[[dict], bool | None] | None = None, progress: bool = False,
                           monitor_every: int = 10) -> TrainResult:
    """Train or refine ``V_theta`` by minimising the relative entropy ``KL(p_data || p_model)`` of Q.

    Parameters
    ----------
    dataset : Dataset or str
        Configurations; forces only if ``model`` is None and a force-matching start is wanted.
    map_spec : str, optional
        Default: the starting model's map, else the data set's default map.
    model : CGPotential, optional
        Starting model with training metadata (e.g. from :func:`train_force_matching`).  Default: a
        force-matching model with default settings when the data have forces, else an untrained
        model (flat MLP plus the walls and data-support priors).
    iterations : int
        Parameter updates (Adam, ``lr`` decayed by a cosine to a tenth).
    estimator : {"auto", "grid", "sampler"}
        How the model average is taken (module docstring); ``auto``: grid for ``n_cg <= 3``.
    lr : float, optional
        Default: 5e-3 (grid, from scratch), 5e-4 (grid, refining a model), 1e-4 (sampler: its
        gradient is noisy, and Adam turns noise into steps of size lr).  Measured on alanine dipeptide
        phi/psi (grid-exact JS ratio): grid from scratch 31 -> 0.47 (lr 5e-3; 1.6 with 5e-4 after 300
        iterations); grid refining a force-matching model 0.28 -> 0.25 (5e-4; 0.33 with 5e-3); sampler
        refining a mass-weighted force-matching model 1.78 -> 1.27 (1e-4; 11 with 5e-4).
    batch_size : int
        Data frames per update (all training frames when there are fewer).
    n_walkers, steps_per_iteration, burn_in, restart_fraction, dt, gamma : ``sampler`` estimator settings
        (walkers start on data frames and run ``burn_in`` steps with the starting model first).
    grid_points : int, optional
        Grid points per coordinate (``grid`` estimator; default :data:`GRID_POINTS`).
    hidden : sequence of int
        Hidden layer widths of a model trained from scratch.
    val_fraction, patience : held-out time blocks; early stopping after ``patience`` iterations without a
        lower validation negative log-likelihood (``grid`` only; 0 disables).
    device, seed, out, resume, callback, progress : as in :func:`train_force_matching`.  Events
        ``{"event": "epoch", "epoch" (= iteration), "epochs", "train_loss", "val_loss", "lr", "seconds",
        "phase": "relative-entropy"}``: for ``grid`` the training and held-out negative log-likelihoods
        (nats per frame, up to a constant), for ``sampler`` the surrogate ``beta (<V>_data - <V>_walkers)``
        and the JS divergence of the walkers' recent positions and the data (every ``monitor_every``
        iterations).  Returning True stops after the current iteration (the checkpoint is kept).

    Returns
    -------
    TrainResult
    """
    from latentlab.compare import compare_latent
    from latentlab.data import load
    from latentlab.simulation import make_sampler, mass_model_from_dict

    t_start = time.perf_counter()
    ds = load(dataset)
    for name, value in (("iterations", iterations), ("n_walkers", n_walkers), ("steps_per_iteration", steps_per_iteration),
                        ("batch_size", batch_size), ("monitor_every", monitor_every)):
        if int(value) < 1:
            fail(name, f"got {value}", "use a positive integer")
    if not 0.0 <= float(restart_fraction) <= 1.0:
        fail("restart_fraction", f"got {restart_fraction}", "use a fraction in [0, 1], e.g. 0.02")
    if estimator not in ESTIMATORS:
        fail("estimator", f"unknown estimator {estimator!r}", f"use one of {', '.join(ESTIMATORS)}")
    dev = resolve_device(device)
    spec = map_spec or (getattr(model, "metadata", {}) or {}).get("map") or ds.default_map
    cg_map = ds.map(spec)
    if estimator == "auto":
        estimator = "grid" if cg_map.n_cg <= 3 else "sampler"
    if estimator == "grid" and cg_map.n_cg > 3:
        fail("estimator", f"the grid estimator needs n_cg <= 3 (the map has {cg_map.n_cg})", "use estimator='sampler'")
    Q_all = cg_map.map_frames(ds.positions)
    train_idx, val_idx = time_block_split(Q_all.shape[0], val_fraction, 20, seed)
    settings = {"kind": "relative-entropy", "map": spec, "estimator": estimator, "iterations": int(iterations),
                "lr": lr, "batch_size": int(batch_size), "seed": int(seed), "val_fraction": float(val_fraction),
                "n_walkers": int(n_walkers), "steps_per_iteration": int(steps_per_iteration), "burn_in": int(burn_in),
                "restart_fraction": float(restart_fraction), "grid_points": grid_points, "dt": float(dt),
                "gamma": gamma}
    ckpt = checkpoint_path(out)
    checkpoint = None
    if resume and out is not None:
        if os.path.exists(ckpt):  # a resumed run shares every setting but iterations (and lr when defaulted)
            checkpoint = resume_checkpoint(ckpt, settings, free=("iterations",) + (("lr",) if lr is None else ()))
            model = CGPotential(**checkpoint["config"])
            model.load_state_dict(checkpoint["start_state"])
            model.metadata = checkpoint["metadata"]
        elif os.path.exists(out):
            return finished_run(out, settings, t_start, phases=("relative-entropy",))
    scratch = False
    if checkpoint is not None:
        scratch = checkpoint["settings"].get("scratch", False)
    elif model is None:
        if ds.has_forces:
            from latentlab.training.force_matching import train_force_matching

            model = train_force_matching(ds, spec, device=dev, seed=seed).model
        else:
            model, scratch = _scratch_model(ds, cg_map, spec, Q_all, seed, hidden), True
    if lr is None:
        lr = 1e-4 if estimator == "sampler" else (5e-3 if scratch else 5e-4)
    check_positive(lr, "lr")
    settings["lr"] = float(lr)
    if cg_map.n_cg != model.n_cg:
        fail("model", f"has {model.n_cg} inputs but the map {spec!r} has {cg_map.n_cg} coordinates",
             "pass a model trained with the same map")
    meta = dict(getattr(model, "metadata", {}) or {})
    if "mass_model" not in meta:
        fail("model", "carries no training metadata (map, A(Q) model)", "start from a model made by latentlab train")
    settings["scratch"] = bool(scratch)
    start_config, start_state = model.config(), {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    beta = 1.0 / ds.kT
    q_train, q_val = Q_all[train_idx].to(dev), Q_all[val_idx].to(dev)
    net = copy.deepcopy(model).to(device=dev, dtype=torch.float64)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=float(lr))
    history: list[dict] = []
    best_val, best_state, bad, start_it = math.inf, None, 0, 0

    sampler = state = grid = grid_logdet = None
    if estimator == "grid":
        grid = quadrature_grid(cg_map, Q_all, grid_points).to(dev)
        mass = mass_model_from_dict(meta["mass_model"])
        grid_logdet = torch.cat([torch.logdet(mass(grid[s:s + 8192].cpu())).to(dev) for s in range(0, grid.shape[0], 8192)])
    else:
        sampler, state = make_sampler(net, dataset=ds, n_walkers=int(n_walkers), dt=dt, gamma=gamma, device=dev,
                                      seed=seed, cg_map=cg_map)
        settings["gamma_used"] = float(sampler.gamma)
    if checkpoint is not None:
        net.load_state_dict(checkpoint["state"])
        opt.load_state_dict(checkpoint["optimizer"])
        history, best_val, bad = list(checkpoint["history"]), float(checkpoint["best_val"]), int(checkpoint["bad"])
        best_state, start_it = checkpoint["best_state"], int(checkpoint["iteration"])
        if sampler is not None:
            sampler.potential.load_state_dict(net.state_dict())
            state = sampler.init(checkpoint["walkers"].to(dev))
            state.P = checkpoint["momenta"].to(dev)
            state.counters = checkpoint["counters"]
            sampler.generator.set_state(checkpoint["generator"])
    elif sampler is not None:
        sampler.step(state, int(burn_in))

    def mlp(q):
        """The trainable part of V (the priors are fixed: their energies are computed once below), kJ/mol."""
        return net.member_energies(q).mean(-1)

    def priors(q):
        with torch.no_grad():
            return torch.cat([net.walls(q[s:s + 8192]) + net.support_prior(q[s:s + 8192]) for s in range(0, q.shape[0], 8192)])

    prior_train, prior_val = priors(q_train), priors(q_val)
    if grid is not None:
        grid_fixed = -beta * priors(grid) - 0.5 * grid_logdet  # log-weight of each grid cell without the MLP

    def log_z():
        """``ln sum_grid exp(-beta V - 1/2 ln det A)`` (the model's log-normaliser up to the cell volume)."""
        return torch.logsumexp(grid_fixed - beta * mlp(grid), dim=0)

    def snapshot(iteration: int) -> dict:
        snap = {"format": CHECKPOINT_FORMAT, "settings": settings, "iteration": iteration, "history": history,
                "config": start_config, "start_state": start_state, "metadata": meta, "state": net.state_dict(),
                "optimizer": opt.state_dict(), "best_val": best_val, "best_state": best_state, "bad": bad}
        if sampler is not None:
            snap.update(walkers=state.Q.detach().cpu(), momenta=state.P.detach().cpu(), recent=[torch.from_numpy(r) for r in recent], generator=sampler.generator.get_state(),
                        counters=dict(state.counters))
        return snap

    recent: list[np.ndarray] = [r.numpy() for r in checkpoint.get("recent", [])] if checkpoint is not None else []
    monitor = math.nan if not history else history[-1]["val_loss"]
    stopped = "completed"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(iterations), initial=start_it, unit="it", desc=f"relative entropy ({estimator})")
    try:
        for it in range(start_it, int(iterations)):
            t0 = time.perf_counter()
            lr_it = float(lr) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * it / max(1, int(iterations) - 1))))
            for group in opt.param_groups:
                group["lr"] = lr_it
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + it)
            if q_train.shape[0] <= int(batch_size):
                pick = slice(None)
            else:
                pick = torch.randint(0, q_train.shape[0], (int(batch_size),), generator=gen).to(dev)
            data_term = beta * (mlp(q_train[pick]) + prior_train[pick]).mean()
            if estimator == "grid":
                loss = data_term + log_z()
            else:
                sampler.step(state, int(steps_per_iteration))
                recent.append(state.Q.detach().cpu().numpy())
                recent = recent[-int(monitor_every):]
                loss = data_term - beta * (mlp(state.Q.detach()) + priors(state.Q.detach())).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            improved = False
            if estimator == "grid":
                with torch.no_grad():
                    monitor = float(beta * (mlp(q_val) + prior_val).mean() + log_z())
                improved = monitor < best_val
            else:
                sampler.potential.load_state_dict(net.state_dict())  # the walkers follow the current V
                q_next = state.Q.detach().clone()
                n_restart = int(round(float(restart_fraction) * q_next.shape[0]))
                if n_restart:
                    who = torch.randperm(q_next.shape[0], generator=gen)[:n_restart].to(dev)
                    q_next[who] = q_train[torch.randint(0, q_train.shape[0], (n_restart,), generator=gen).to(dev)]
                # V changed: re-evaluate the cached V, grad V at the walkers (fresh momenta are a valid Gibbs step).
                counters = state.counters
                state = sampler.init(q_next)
                state.counters = counters
                if (it + 1) % int(monitor_every) == 0 or it == int(iterations) - 1:
                    monitor = compare_latent(np.concatenate(recent), q_val.cpu().numpy(),
                                             periodic=cg_map.periodic)["js_divergence"]
                    improved = monitor < best_val
            if improved:
                best_val, bad = monitor, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            elif estimator == "grid":
                bad += 1
            entry = {"epoch": it + 1, "train_loss": float(loss.detach()), "val_loss": float(monitor), "lr": lr_it,
                     "seconds": time.perf_counter() - t0, "phase": "relative-entropy"}
            history.append(entry)
            if ckpt is not None:
                with atomic_output(ckpt) as tmp:
                    torch.save(snapshot(it + 1), tmp)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{entry['train_loss']:.4g}", val=f"{monitor:.4g}")
            if callback is not None and callback({"event": "epoch", "epochs": int(iterations), **entry}):
                stopped = "callback"
                break
            if estimator == "grid" and patience and bad >= int(patience):
                stopped = "early-stopping"
                break
    finally:
        if bar is not None:
            bar.close()
    final = CGPotential(**net.config())
    final.load_state_dict(best_state if best_state is not None else {k: v.detach().cpu() for k, v in net.state_dict().items()})
    settings["device"] = str(dev)
    settings["started_from"] = (meta.get("training") or {}).get("kind", "scratch")
    diagnostics = sampler.diagnostics(state) if sampler is not None else {"grid_points": int(grid.shape[0])}
    final.metadata = {**meta, "training": settings, "history": list(meta.get("history", [])) + history,
                      "relative_entropy": {"history": history, "diagnostics": diagnostics},
                      "best_val_loss": best_val, "stopped": stopped, "convention": "consistent"}
    if out is not None:
        save_model(final, out)
        if stopped != "callback" and ckpt and os.path.exists(ckpt):
            os.remove(ckpt)
    return TrainResult(final, history, float(best_val), out, stopped, ckpt if stopped == "callback" else None,
                       time.perf_counter() - t_start, settings)
