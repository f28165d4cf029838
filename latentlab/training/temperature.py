"""Temperature-conditioned training with internal-energy matching (the seed's section 3.3).

A model ``W(theta, T, Q)`` (a :class:`CGPotential` with ``temperature_conditioning``) is fit
to data at several temperatures with two terms:

* force matching at each temperature, with that temperature's targets ``g(q; T)``;
* internal-energy matching: ``U_int(Q, T) = W - T dW/dT`` is fit to the frames' potential
  energies ``E`` (the conditional mean of E given Q and T is what it can reach):
  ``|| (W - T dW/dT + b) - E ||^2 / kT_ref^2`` with a learnt offset ``b`` (energies have an
  arbitrary zero).

Why ``W - T dW/dT`` is the internal energy: with ``A_pmf = -kT ln p(Q)``,
``d(A_pmf / T) / d(1/T) = <U>_Q`` up to a Q-independent constant, i.e.
``A_pmf - T dA_pmf/dT = <U>_Q``.  The log-det term of the latent potential,
``c kT ln det A(Q)``, is linear in T and drops out of ``V - T dV/dT``, so the same
expression holds for V in any convention.

The result is one model that can be simulated at any temperature between (and a little
beyond) the training temperatures: ``latentlab simulate MODEL --temperature 325``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import torch

from latentlab.io import atomic_output
from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import save_model, versions
from latentlab.training.force_matching import (CHECKPOINT_FORMAT, TrainResult, checkpoint_path, finished_run,
                                               resume_checkpoint, time_block_split)
from latentlab.training.targets import prepare_targets, resolve_device, resolve_method
from latentlab.validation import check_positive, fail

DEFAULT_SETS = ("alanine-dipeptide", "alanine-dipeptide-350K", "alanine-dipeptide-400K")
KIND = "temperature-matching"


def _batch_loss(model, offset, Q, g, T, E, scale, kT_ref, energy_weight, create_graph=True):
    q = Q.detach().requires_grad_(True)
    t = T.detach().requires_grad_(True)
    v = model(q, t)
    grad_q, grad_t = torch.autograd.grad(v.sum(), (q, t), create_graph=create_graph)
    kT = 0.008314462618 * T
    fm = (((grad_q - g) * scale / kT[:, None]) ** 2).mean()
    u_int = v - T * grad_t
    energy = ((u_int + offset - E) / kT_ref) ** 2
    return fm, energy.mean(), fm + energy_weight * energy.mean()


def train_temperature_matching(datasets: Sequence = DEFAULT_SETS, map_spec: str | None = None, *, epochs: int = 60,
                               lr: float = 2e-3, batch_size: int = 256, hidden: Sequence[int] = (128, 128, 128),
                               energy_weight: float = 0.01, convention: str = "consistent",
                               method: str = "auto", device="auto", seed: int = 0,
                               val_fraction: float = 0.1, patience: int = 15, out: str | None = None,
                               resume: bool = False, callback: Callable[[dict], bool | None] | None = None,
                               progress: bool = False) -> TrainResult:
    """Train ``V(Q, T)`` on data sets at several temperatures (force matching + internal-energy matching).

    Parameters
    ----------
    datasets : sequence of Dataset or str
        Data with forces *and* potential energies at different temperatures (default: the built-in
        alanine dipeptide sets at 300, 350 and 400 K); all must share the map.
    energy_weight : float
        Weight of the energy term relative to force matching (both in kT^2).
    out : str, optional
        Model file (written at the end and when stopped); a checkpoint ``out + ".ckpt"`` is written
        atomically after every epoch and removed when training finishes.
    resume : bool
        Continue from ``out + ".ckpt"`` (settings must match; ``epochs`` and ``patience`` may change);
        the shuffle of each epoch depends only on the seed and the epoch, so a resumed run ends with the
        same weights as an uninterrupted one.  A finished model at ``out`` (no checkpoint) is returned as is.
    callback : callable, optional
        ``callback(event: dict)`` after every epoch: ``{"event": "epoch", "epoch", "epochs", "train_loss",
        "val_loss", "val_force_loss", "val_energy_loss", "lr", "seconds", "elapsed", "best_val_loss",
        "improved", "phase"}``.  Returning True stops training; the best model so far is written to ``out``
        and the checkpoint is kept for ``resume``.
    progress : bool
        tqdm progress bar with the losses.
    Other parameters as in :func:`train_force_matching`.

    Returns
    -------
    TrainResult
        The model has ``temperature_conditioning=True``; its reference temperature is the lowest one.
        Its ``metadata["energy_offset"]`` is the learnt offset ``b`` that goes with the returned weights.
    """
    from latentlab.data import load
    from latentlab.simulation import mass_function

    t_start = time.perf_counter()
    sets = [load(d) for d in datasets]
    if len(sets) < 2:
        fail("datasets", f"got {len(sets)} data set(s)", "give data at two or more temperatures")
    for ds in sets:
        if not ds.has_energies or not ds.has_forces:
            fail("datasets", f"{ds.name!r} lacks energies or forces", "internal-energy matching needs both")
    epochs = int(epochs)
    if epochs < 1:
        fail("epochs", f"got {epochs}", "train for at least 1 epoch")
    if int(batch_size) < 1:
        fail("batch_size", f"got {batch_size}", "use a positive batch size, e.g. 256")
    check_positive(lr, "lr")
    hidden = tuple(int(h) for h in hidden)
    dev = resolve_device(device)
    temps = [float(ds.temperature) for ds in sets]
    if len(set(temps)) < 2:
        fail("datasets", f"all data sets are at {temps[0]} K", "give data at different temperatures")
    ref = sets[int(min(range(len(sets)), key=lambda i: temps[i]))]
    spec = map_spec or ref.default_map
    ckpt = checkpoint_path(out)
    settings = {"kind": KIND, "datasets": [str(ds.name) for ds in sets], "temperatures": temps,
                "n_frames": [int(ds.n_frames) for ds in sets], "map": spec, "convention": convention,
                "method": method, "epochs": epochs, "lr": float(lr), "batch_size": int(batch_size),
                "hidden": list(hidden), "energy_weight": float(energy_weight), "seed": int(seed),
                "val_fraction": float(val_fraction), "patience": int(patience)}
    checkpoint = None
    if resume and out is not None:
        if os.path.exists(ckpt):  # a resumed run shares every setting but epochs and patience
            checkpoint = resume_checkpoint(ckpt, settings)
        elif os.path.exists(out):
            return finished_run(out, settings, t_start)

    cg_map = ref.map(spec)
    mass = mass_function(cg_map, ref)
    parts = {"Q": [], "g": [], "T": [], "E": [], "val": []}
    for ds in sets:
        q, g = prepare_targets(ds, ds.map(spec), convention, method, device=dev, dtype=torch.float32, mass=mass)
        n = q.shape[0]
        _, val = time_block_split(n, val_fraction, 20, seed)
        is_val = torch.zeros(n, dtype=torch.bool)
        is_val[val] = True
        parts["Q"].append(q)
        parts["g"].append(g)
        parts["T"].append(torch.full((n,), float(ds.temperature), dtype=torch.float32, device=dev))
        parts["E"].append(torch.as_tensor(ds.energies, dtype=torch.float32, device=dev))
        parts["val"].append(is_val.to(dev))
    Q, g, T, E = (torch.cat(parts[k]) for k in ("Q", "g", "T", "E"))
    is_val = torch.cat(parts["val"])
    train_idx, val_idx = torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()
    kT_ref = 0.008314462618 * min(temps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = CGPotential.from_data(Q.double().cpu(), periodic=cg_map.periodic, temperature=min(temps), hidden=hidden,
                                      temperature_conditioning=True, names=cg_map.names, units=cg_map.units)
    model = model.to(device=dev, dtype=torch.float32)
    offset = torch.nn.Parameter(torch.tensor(-float(E.mean()), device=dev))
    opt = torch.optim.Adam(list(model.parameters()) + [offset], lr=float(lr))
    scale = model.std.to(device=dev, dtype=torch.float32)
    history, best_val, best_state, best_offset, bad, start_epoch = [], math.inf, None, float(offset.detach()), 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
        with torch.no_grad():
            offset.copy_(checkpoint["offset"].to(dev))
        opt.load_state_dict(checkpoint["optimizer"])
        history = list(checkpoint["history"])
        best_val = float(checkpoint["best_val_loss"])
        best_state, best_offset = checkpoint["best_state"], float(checkpoint["best_offset"])
        bad = int(checkpoint["bad_epochs"])
        start_epoch = int(checkpoint["epoch"])
    if best_state is None:
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    def snapshot(epoch: int) -> dict:
        return {"format": CHECKPOINT_FORMAT, "settings": settings, "epoch": epoch, "history": history,
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "offset": offset.detach().cpu().clone(), "optimizer": opt.state_dict(), "best_val_loss": best_val,
                "best_state": best_state, "best_offset": best_offset, "bad_epochs": bad}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=min(len(history), epochs), unit="epoch", desc="temperature matching")
    stopped = "completed"
    n_batches = max(1, math.ceil(train_idx.numel() / int(batch_size)))
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            lr_e = float(lr) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * epoch / max(1, epochs - 1))))
            for group in opt.param_groups:
                group["lr"] = lr_e
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
            order = train_idx[torch.randperm(train_idx.numel(), generator=gen).to(dev)]
            run_fm = run_e = 0.0
            for b in range(n_batches):
                idx = order[b * int(batch_size):(b + 1) * int(batch_size)]
                fm, en, loss = _batch_loss(model, offset, Q[idx], g[idx], T[idx], E[idx], scale, kT_ref, energy_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                run_fm += float(fm.detach())
                run_e += float(en.detach())
            vfm, ven, vloss = (x.detach() for x in _batch_loss(model, offset, Q[val_idx], g[val_idx], T[val_idx],
                                                               E[val_idx], scale, kT_ref, energy_weight,
                                                               create_graph=False))
            val = float(vloss)
            improved = val < best_val
            if improved:
                best_val, bad = val, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                best_offset = float(offset.detach())
            else:
                bad += 1
            entry = {"epoch": len(history) + 1, "train_loss": (run_fm + energy_weight * run_e) / n_batches,
                     "val_loss": val, "val_force_loss": float(vfm), "val_energy_loss": float(ven), "lr": lr_e,
                     "seconds": time.perf_counter() - t0, "phase": KIND}
            history.append(entry)
            if ckpt is not None:
                with atomic_output(ckpt) as tmp:
                    torch.save(snapshot(epoch + 1), tmp)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(force=f"{float(vfm):.4g}", energy=f"{float(ven):.4g}", best=f"{best_val:.4g}")
            if callback is not None and callback({"event": "epoch", "epochs": epochs,
                                                  "elapsed": time.perf_counter() - t_start, "best_val_loss": best_val,
                                                  "improved": improved, **entry}):
                stopped = "callback"
                break
            if patience and bad >= int(patience):
                stopped = "early-stopping"
                break
    finally:
        if bar is not None:
            bar.close()
    final = CGPotential(**model.config())
    final.load_state_dict(best_state)
    stride = max(1, len(parts["Q"][0]) // 2000)
    training = {**settings, "device": str(dev)}
    final.metadata = {
        "map": cg_map.spec or spec, "names": cg_map.names, "units": cg_map.units, "periodic": cg_map.periodic,
        "bounds": [None if b is None else [float(b[0]), float(b[1])] for b in cg_map.bounds],
        "temperature": min(temps), "kT": kT_ref, "temperatures": temps, "convention": convention,
        "method": resolve_method(method, cg_map, ref),
        "energy_unit": "kJ/mol", "mass_model": mass.to_dict(), "consistency": mass.consistency,
        "dataset": {"name": ref.name, "sets": [ds.name for ds in sets]},
        "training": training, "energy_offset": best_offset, "start_Q": parts["Q"][0][::stride].detach().cpu().double(),
        "history": history, "best_val_loss": best_val, "stopped": stopped, "versions": versions(),
    }
    if out is not None:
        save_model(final, out)
        if stopped != "callback" and os.path.exists(ckpt):
            os.remove(ckpt)
    return TrainResult(final, history, best_val, out, stopped, ckpt if stopped == "callback" else None,
                       time.perf_counter() - t_start, training)
