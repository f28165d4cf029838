"""Force matching: fit ``grad_Q V_theta`` to the frame-wise targets ``g(q)`` (THEORY.md section 3).

    loss(theta) = mean_frames mean_i ( s_i (d V_theta / d Q_i - g_i) / kT )^2

with ``s_i`` the standard deviation of coordinate i in the data (1 rad for
periodic ones), i.e. the mean squared error of the gradient with respect to
standardised coordinates, in kT.  The weights do not change the minimiser
(the conditional mean of g, which is grad V; Noid et al. 2008), only how the
optimiser balances coordinates of different units.  The loss has a large
irreducible part (the noise of g around its conditional mean), so its
absolute value says little; differences between epochs and models do.

Procedure: validation frames are whole time blocks (the data are correlated
in time; a random split would leak), Adam with a cosine learning-rate decay,
early stopping on the validation loss (the best model is kept), a checkpoint
written atomically after every epoch (``OUT.ckpt``) from which ``resume=True``
continues bit-for-bit (the shuffling of epoch e depends only on the seed and
e), the same code on CPU and CUDA.

References
----------
Noid et al., J. Chem. Phys. 128, 244114 (2008): multiscale coarse-graining / force matching.
Wang et al., ACS Cent. Sci. 5, 755 (2019): CGnet, neural force matching with priors.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from latentlab.io import atomic_output
from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import model_from_payload, model_payload, save_model, versions
from latentlab.training.targets import prepare_targets, resolve_device
from latentlab.validation import check_positive, fail

CHECKPOINT_FORMAT = "latentlab-checkpoint"

#: Defaults of :func:`train_force_matching` (also shown by ``latentlab train --help``).
DEFAULTS = {"epochs": 60, "lr": 2e-3, "batch_size": 256, "hidden": (128, 128, 128), "val_fraction": 0.1,
            "patience": 15, "n_blocks": 20, "lr_final_fraction": 0.05, "weight_decay": 0.0}


@dataclass
class TrainResult:
    """Outcome of a training run.

    Attributes
    ----------
    model : CGPotential
        The model with the lowest validation loss (with ``.metadata``).
    history : list of dict
        One entry per epoch: ``epoch, train_loss, val_loss, lr, seconds``.
    best_val_loss : float
    path : str or None
        Where the model file was written.
    stopped : str
        ``"completed"``, ``"early-stopping"`` or ``"callback"`` (stopped by the caller).
    checkpoint : str or None
    seconds : float
        Wall time of this call (target preparation included).
    """

    model: CGPotential
    history: list
    best_val_loss: float
    path: str | None = None
    stopped: str = "completed"
    checkpoint: str | None = None
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def time_block_split(n_frames: int, val_fraction: float, n_blocks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/validation frame indices: the frames cut into ``n_blocks`` contiguous time blocks, whole blocks held out."""
    if not 0.0 < val_fraction < 1.0:
        fail("val_fraction", f"got {val_fraction}", "use a fraction in (0, 1), e.g. 0.1")
    n_blocks = max(2, min(int(n_blocks), n_frames))
    n_val = min(n_blocks - 1, max(1, round(val_fraction * n_blocks)))
    gen = torch.Generator().manual_seed(int(seed))
    val_blocks = torch.randperm(n_blocks, generator=gen)[:n_val]
    block = torch.arange(n_frames) * n_blocks // n_frames
    is_val = torch.isin(block, val_blocks)
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def force_matching_loss(model: CGPotential, Q: torch.Tensor, g: torch.Tensor, scale: torch.Tensor, kT: float,
                        create_graph: bool = True, temperature=None) -> torch.Tensor:
    """Mean squared gradient error in standardised coordinates and kT (see the module docstring)."""
    q = Q.detach().requires_grad_(True)
    v = model(q, temperature) if temperature is not None else model(q)
    (grad,) = torch.autograd.grad(v.sum(), q, create_graph=create_graph)
    return (((grad - g) * scale / kT) ** 2).mean()


def _lr_at(epoch: int, epochs: int, lr: float, final_fraction: float) -> float:
    """Cosine decay from ``lr`` (epoch 0) to ``final_fraction * lr`` (last epoch)."""
    if epochs <= 1:
        return lr
    t = epoch / (epochs - 1)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def _evaluate(model, Q, g, scale, kT, batch):
    total = 0.0
    for s in range(0, Q.shape[0], batch):
        with torch.enable_grad():
            loss = force_matching_loss(model, Q[s:s + batch], g[s:s + batch], scale, kT, create_graph=False)
        total += float(loss) * min(batch, Q.shape[0] - s)
    return total / max(1, Q.shape[0])


def checkpoint_path(out: str | None) -> str | None:
    return None if out is None else os.fspath(out) + ".ckpt"


def _load_checkpoint(path: str) -> dict:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        fail("resume", f"the checkpoint {path} is unreadable ({type(err).__name__})",
             "delete it and train without --resume")
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        fail("resume", f"{path} is not a latentlab training checkpoint", "delete it and train without --resume")
    return ck


def train_force_matching(dataset, map_spec: str | None = None, *, epochs: int = DEFAULTS["epochs"],
                         lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                         hidden: Sequence[int] = DEFAULTS["hidden"], convention: str = "consistent",
                         method: str = "mass-weighted", device="auto", seed: int = 0,
                         val_fraction: float = DEFAULTS["val_fraction"], out: str | None = None, resume: bool = False,
                         callback: Callable[[dict], bool | None] | None = None, progress: bool = False,
                         patience: int = DEFAULTS["patience"], n_blocks: int = DEFAULTS["n_blocks"],
                         lr_final_fraction: float = DEFAULTS["lr_final_fraction"],
                         weight_decay: float = DEFAULTS["weight_decay"], prior: bool = True,
                         activation: str = "silu", dtype=torch.float32, mass=None,
                         callback_interval: float = 0.2) -> TrainResult:
    """Train ``V_theta(Q)`` by force matching.

    Parameters
    ----------
    dataset : Dataset or str
        Data with positions, forces and masses (a built-in name or a path is loaded).
    map_spec : str, optional
        CG map (default: the data set's default map).
    epochs, lr, batch_size : int, float, int
        Maximum epochs, initial Adam learning rate (cosine decay to ``lr_final_fraction * lr``), frames per batch.
    hidden : sequence of int
        Hidden layer widths of the MLP.
    convention : {"consistent", "seed_eq9", "pmf"}
        Which V is learned (:mod:`latentlab.conventions`); ``consistent`` is the one the dynamics needs.
    method : {"mass-weighted", "pseudo-inverse"}
        Choice of B in the mean-force estimator.
    device : {"auto", "cpu", "cuda"}
    seed : int
        Seeds the initial weights, the validation blocks and the shuffling (runs are reproducible).
    val_fraction : float
        Fraction of the time blocks held out for validation.
    out : str, optional
        Model file (written at the end and when stopped); the checkpoint is ``out + ".ckpt"``.
    resume : bool
        Continue from ``out + ".ckpt"`` (settings must match); a finished model at ``out`` is returned as is.
    callback : callable, optional
        ``callback(event: dict)``; events ``{"event": "epoch", "epoch", "epochs", "train_loss", "val_loss",
        "lr", "seconds", "elapsed", "best_val_loss", "improved"}`` after every epoch and
        ``{"event": "batch", "epoch", "batch", "n_batches", "train_loss"}`` at most every
        ``callback_interval`` seconds.  Returning True stops training at once (within one batch);
        the best model so far is written to ``out`` and the checkpoint is kept for ``resume``.
    progress : bool
        tqdm progress bar with the losses.
    patience : int
        Early stopping after this many epochs without a better validation loss (0 disables).
    prior : bool
        Harmonic walls just outside the data range (:class:`CGPotential`).
    dtype : torch dtype of the training (float32 default).
    mass : MassModel, optional
        A(Q) for the log-det term and the model file (default :func:`latentlab.simulation.mass_function`).

    Returns
    -------
    TrainResult
    """
    from latentlab.conventions import logdet_coefficient
    from latentlab.data import load
    from latentlab.simulation import mass_function

    t_start = time.perf_counter()
    ds = load(dataset)
    logdet_coefficient(convention)
    epochs = int(epochs)
    if epochs < 1:
        fail("epochs", f"got {epochs}", "train for at least 1 epoch")
    if int(batch_size) < 1:
        fail("batch_size", f"got {batch_size}", "use a positive batch size, e.g. 256")
    check_positive(lr, "lr")
    hidden = tuple(int(h) for h in hidden)
    dev = resolve_device(device)
    ckpt = checkpoint_path(out)
    settings = {"map": map_spec or ds.default_map, "convention": convention, "method": method, "epochs": epochs,
                "lr": float(lr), "batch_size": int(batch_size), "hidden": list(hidden), "seed": int(seed),
                "val_fraction": float(val_fraction), "patience": int(patience), "n_blocks": int(n_blocks),
                "lr_final_fraction": float(lr_final_fraction), "weight_decay": float(weight_decay),
                "prior": bool(prior), "activation": activation, "dtype": str(dtype).replace("torch.", "")}
    # Settings a resumed run must share with the checkpoint (epochs may be extended).
    frozen = [k for k in settings if k not in ("epochs", "patience")]

    checkpoint = None
    if resume and out is not None:
        if os.path.exists(ckpt):
            checkpoint = _load_checkpoint(ckpt)
            old = checkpoint["settings"]
            diff = [k for k in frozen if old.get(k) != settings[k]]
            if diff:
                fail("resume", f"the checkpoint {ckpt} was made with different settings ({', '.join(diff)}: "
                     f"{[old.get(k) for k in diff]} vs {[settings[k] for k in diff]})",
                     "resume with the same options, or train without --resume")
        elif os.path.exists(out):
            from latentlab.potentials import load_model

            model = load_model(out)
            hist = list(model.metadata.get("history", []))
            return TrainResult(model, hist, float(model.metadata.get("best_val_loss", math.nan)), out,
                               model.metadata.get("stopped", "completed"), None, time.perf_counter() - t_start, settings)

    def emit(event: dict) -> bool:
        return bool(callback(event)) if callback is not None else False

    emit({"event": "prepare", "message": "computing force-matching targets"})
    cg_map = ds.map(map_spec)
    mass = mass if mass is not None else mass_function(cg_map, ds)
    Q, g = prepare_targets(ds, cg_map, convention, method, device=dev, dtype=dtype, mass=mass)
    train_idx, val_idx = time_block_split(Q.shape[0], val_fraction, n_blocks, seed)
    train_idx, val_idx = train_idx.to(dev), val_idx.to(dev)
    kT = ds.kT

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = CGPotential.from_data(Q[train_idx].double().cpu(), periodic=cg_map.periodic, temperature=ds.temperature,
                                      prior=prior, wall_range=(Q.amin(0).double().cpu(), Q.amax(0).double().cpu()),
                                      hidden=hidden, activation=activation, names=cg_map.names,
                                      units=cg_map.units)
    model = model.to(device=dev, dtype=dtype)
    scale = model.std.to(device=dev, dtype=dtype)
    opt = torch.optim.Adam(model.parameters(), lr=float(lr), weight_decay=float(weight_decay))
    history: list[dict] = []
    best_val, best_state, bad_epochs, start_epoch = math.inf, None, 0, 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"]["state_dict"])
        opt.load_state_dict(checkpoint["optimizer"])
        history = list(checkpoint["history"])
        best_val = float(checkpoint["best_val_loss"])
        best_state = checkpoint["best_state"]
        bad_epochs = int(checkpoint["bad_epochs"])
        start_epoch = int(checkpoint["epoch"])
    if best_state is None:
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    stride = max(1, Q.shape[0] // 2000)
    metadata = {
        "map": cg_map.spec or settings["map"], "names": cg_map.names, "units": cg_map.units,
        "periodic": cg_map.periodic, "bounds": [None if b is None else [float(b[0]), float(b[1])] for b in cg_map.bounds],
        "temperature": float(ds.temperature), "kT": float(kT), "convention": convention, "method": method,
        "potential": f"V(Q) = A_pmf(Q) {'-' if convention == 'consistent' else '+'} (kT/2) ln det A(Q)"
                     if convention != "pmf" else "V(Q) = A_pmf(Q)",
        "energy_unit": "kJ/mol", "mass_model": mass.to_dict(), "consistency": mass.consistency,
        "dataset": {"name": ds.name, "source": str(ds.source), "n_frames": int(ds.n_frames)},
        "training": {"kind": "force-matching", **settings, "n_train": int(train_idx.numel()),
                     "n_val": int(val_idx.numel()), "device": str(dev)},
        "start_Q": Q[::stride].detach().cpu().double(), "versions": versions(),
    }

    def snapshot(epoch: int):
        return {"format": CHECKPOINT_FORMAT, "settings": settings, "epoch": epoch, "history": history,
                "model": model_payload(model, {}), "optimizer": opt.state_dict(), "best_val_loss": best_val,
                "best_state": best_state, "bad_epochs": bad_epochs}

    def finish(stopped: str) -> TrainResult:
        final = CGPotential(**model.config())
        final.load_state_dict(best_state)
        final.metadata = {**metadata, "history": history, "best_val_loss": best_val, "stopped": stopped}
        if out is not None:
            save_model(final, out)
            if stopped != "callback" and ckpt and os.path.exists(ckpt):
                os.remove(ckpt)
        return TrainResult(final, history, best_val, out, stopped, ckpt if stopped == "callback" else None,
                           time.perf_counter() - t_start, settings)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, initial=min(start_epoch, epochs), unit="epoch", desc="force matching")
    n_train = train_idx.numel()
    n_batches = max(1, math.ceil(n_train / int(batch_size)))
    last_call = time.perf_counter()
    stopped = "completed"
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            lr_e = _lr_at(epoch, epochs, float(lr), lr_final_fraction)
            for group in opt.param_groups:
                group["lr"] = lr_e
            model.train()
            gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch)
            order = train_idx[torch.randperm(n_train, generator=gen).to(dev)]
            running = 0.0
            for b in range(n_batches):
                idx = order[b * int(batch_size):(b + 1) * int(batch_size)]
                loss = force_matching_loss(model, Q[idx], g[idx], scale, kT)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += float(loss.detach())
                if callback is not None and time.perf_counter() - last_call >= callback_interval:
                    last_call = time.perf_counter()
                    if emit({"event": "batch", "epoch": epoch + 1, "batch": b + 1, "n_batches": n_batches,
                             "train_loss": running / (b + 1)}):
                        stopped = "callback"
                        break
            if stopped == "callback":
                break  # the partial epoch is dropped; the checkpoint holds the last complete one
            model.eval()
            val = _evaluate(model, Q[val_idx], g[val_idx], scale, kT, 4096)
            improved = val < best_val
            if improved:
                best_val, bad_epochs = val, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            seconds = time.perf_counter() - t0
            entry = {"epoch": epoch + 1, "train_loss": running / n_batches, "val_loss": val, "lr": lr_e,
                     "seconds": seconds}
            history.append(entry)
            if ckpt is not None:
                with atomic_output(ckpt) as tmp:
                    torch.save(snapshot(epoch + 1), tmp)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{entry['train_loss']:.4g}", val=f"{val:.4g}", best=f"{best_val:.4g}")
            if emit({"event": "epoch", "epochs": epochs, "elapsed": time.perf_counter() - t_start,
                     "best_val_loss": best_val, "improved": improved, **entry}):
                stopped = "callback"
                break
            if patience and bad_epochs >= int(patience):
                stopped = "early-stopping"
                break
    finally:
        if bar is not None:
            bar.close()
    return finish(stopped)
