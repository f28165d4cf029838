"""Relative-entropy training: make the latent dynamics' own samples match the data.

The relative entropy of the CG model (Shell 2008) is ``S_rel = KL(p_data(Q) || p_model(Q))``
with ``p_model(Q) ~ exp(-beta V_theta(Q)) det A(Q)^(-1/2)``, the marginal that latent
Langevin with ``H = 1/2 P^T A P + V_theta`` samples (THEORY.md section 2).  A(Q) does not
depend on theta, so

    d S_rel / d theta = beta ( <dV/dtheta>_data - <dV/dtheta>_model )

and each iteration descends the surrogate ``beta (mean V(Q_data) - mean V(Q_model))`` with
``Q_model`` the current positions of persistent walkers of the latent sampler
(persistent contrastive divergence: the walkers are advanced ``steps_per_iteration`` steps
between updates and never restarted; Tieleman 2008).  It needs no forces, only
configurations; starting from a force-matching model it corrects what force matching
got wrong where the data are sparse.

References
----------
Shell, J. Chem. Phys. 129, 144108 (2008): the relative entropy of coarse-grained models.
Tieleman, ICML (2008): persistent contrastive divergence.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Callable

import numpy as np
import torch

from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import save_model
from latentlab.training.force_matching import TrainResult
from latentlab.training.targets import resolve_device
from latentlab.validation import check_positive, fail


def train_relative_entropy(dataset, map_spec: str | None = None, *, model: CGPotential | None = None,
                           iterations: int = 150, n_walkers: int = 512, steps_per_iteration: int = 20,
                           burn_in: int = 200, lr: float = 5e-4, batch_size: int = 2048, dt: float = 0.002,
                           gamma="auto", device="cpu", seed: int = 0, out: str | None = None,
                           callback: Callable[[dict], bool | None] | None = None, progress: bool = False,
                           monitor_every: int = 10) -> TrainResult:
    """Refine (or train) ``V_theta`` by minimising the relative entropy with samples of the latent sampler.

    Parameters
    ----------
    dataset : Dataset or str
        Configurations (forces are only needed when ``model`` is None and a force-matching start is made).
    map_spec : str, optional
    model : CGPotential, optional
        Starting model with training metadata (e.g. from :func:`train_force_matching`); default: a
        force-matching model trained with default settings first.
    iterations : int
        Parameter updates.
    n_walkers, steps_per_iteration, burn_in, dt, gamma : sampler settings (persistent walkers started from data
        frames; ``burn_in`` steps with the starting model before the first update).
    lr : float
        Adam learning rate.
    batch_size : int
        Data frames per update.
    device, seed, out, callback, progress : as in :func:`train_force_matching`; events ``{"event": "epoch",
        "epoch" (= iteration), "epochs", "train_loss" (the surrogate, in kT), "val_loss" (JS divergence of the
        walkers' recent samples and the data, every ``monitor_every`` iterations, else the last value), "lr",
        "seconds"}``.  Returning True stops after the current iteration.

    Returns
    -------
    TrainResult
        ``history`` entries carry ``phase = "relative-entropy"``; the model's metadata records the settings.
    """
    from latentlab.compare import compare_latent
    from latentlab.data import load
    from latentlab.simulation import make_sampler

    t_start = time.perf_counter()
    ds = load(dataset)
    for name, value in (("iterations", iterations), ("n_walkers", n_walkers), ("steps_per_iteration", steps_per_iteration),
                        ("batch_size", batch_size)):
        if int(value) < 1:
            fail(name, f"got {value}", "use a positive integer")
    check_positive(lr, "lr")
    dev = resolve_device(device)
    if model is None:
        from latentlab.training.force_matching import train_force_matching

        model = train_force_matching(ds, map_spec, device=dev, seed=seed).model
    meta = dict(getattr(model, "metadata", {}) or {})
    spec = map_spec or meta.get("map") or ds.default_map
    cg_map = ds.map(spec)
    if cg_map.n_cg != model.n_cg:
        fail("model", f"has {model.n_cg} inputs but the map {spec!r} has {cg_map.n_cg} coordinates",
             "pass a model trained with the same map")
    q_data = torch.cat([cg_map(torch.as_tensor(ds.positions[s:s + 20000], dtype=torch.float64)).detach()
                        for s in range(0, ds.n_frames, 20000)]).to(dev)
    beta = 1.0 / ds.kT
    net = copy.deepcopy(model).to(device=dev, dtype=torch.float64)
    net.metadata = meta
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=float(lr))
    sampler, state = make_sampler(net, dataset=ds, n_walkers=int(n_walkers), dt=dt, gamma=gamma, device=dev, seed=seed,
                                  cg_map=cg_map)
    sampler.step(state, int(burn_in))
    gen = torch.Generator().manual_seed(int(seed))
    history: list[dict] = []
    recent: list[np.ndarray] = []
    monitor = math.nan
    stopped = "completed"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(iterations), unit="it", desc="relative entropy")
    try:
        for it in range(int(iterations)):
            t0 = time.perf_counter()
            sampler.step(state, int(steps_per_iteration))
            recent.append(state.Q.detach().cpu().numpy())
            recent = recent[-monitor_every:]
            idx = torch.randint(0, q_data.shape[0], (int(batch_size),), generator=gen).to(dev)
            loss = beta * (net(q_data[idx]).mean() - net(state.Q.detach()).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # V changed: refresh the cached V, grad V at the walkers (fresh momenta are a valid Gibbs step).
            counters = state.counters
            state = sampler.init(state.Q.detach())
            state.counters = counters
            if (it + 1) % int(monitor_every) == 0 or it == int(iterations) - 1:
                monitor = compare_latent(np.concatenate(recent), q_data.cpu().numpy(), periodic=cg_map.periodic)["js_divergence"]
            entry = {"epoch": it + 1, "train_loss": float(loss.detach()), "val_loss": float(monitor), "lr": float(lr),
                     "seconds": time.perf_counter() - t0, "phase": "relative-entropy"}
            history.append(entry)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(surrogate=f"{entry['train_loss']:.3g}", js=f"{monitor:.3g}")
            if callback is not None and callback({"event": "epoch", "epochs": int(iterations), **entry}):
                stopped = "callback"
                break
    finally:
        if bar is not None:
            bar.close()
    final = CGPotential(**net.config())
    final.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    settings = {"kind": "relative-entropy", "map": spec, "iterations": int(iterations), "n_walkers": int(n_walkers),
                "steps_per_iteration": int(steps_per_iteration), "burn_in": int(burn_in), "lr": float(lr),
                "batch_size": int(batch_size), "dt": float(dt), "gamma": float(sampler.gamma), "seed": int(seed),
                "device": str(dev), "started_from": meta.get("training", {}).get("kind")}
    final.metadata = {**meta, "training": settings, "history": list(meta.get("history", [])) + history,
                      "relative_entropy": {"history": history, "diagnostics": sampler.diagnostics(state)},
                      "stopped": stopped}
    if out is not None:
        save_model(final, out)
    return TrainResult(final, history, float(monitor), out, stopped, None, time.perf_counter() - t_start, settings)
