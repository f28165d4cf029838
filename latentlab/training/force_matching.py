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

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from latentlab.io import atomic_output
from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import model_payload, save_model, versions
from latentlab.training.defaults import DEFAULTS  # defined there so the CLI can read it without torch
from latentlab.training.targets import prepare_targets, resolve_device, resolve_method
from latentlab.validation import check_positive, fail

CHECKPOINT_FORMAT = "latentlab-checkpoint"


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


def prior_gradient(model: CGPotential, Q: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """``grad_Q`` of the model's fixed priors (walls + data support) at ``Q``, ``(n_frames, n_cg)``.

    The priors do not depend on the weights, so training computes this once instead of every batch.
    """
    out = []
    for s in range(0, Q.shape[0], batch):
        q = Q[s:s + batch].detach().to(torch.float64).requires_grad_(True)
        e = model.walls(q) + model.support_prior(q)
        (gq,) = torch.autograd.grad(e.sum(), q) if e.requires_grad else (torch.zeros_like(q),)
        out.append(gq.to(Q.dtype))
    return torch.cat(out)


def force_matching_loss(model: CGPotential, Q: torch.Tensor, g: torch.Tensor, scale: torch.Tensor, kT: float,
                        create_graph: bool = True, temperature=None, per_member: bool = False,
                        prior_grad: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared gradient error in standardised coordinates and kT (see the module docstring).

    ``per_member``: for an ensemble, the mean over members of each member's own loss (members are
    trained independently); otherwise the loss of the ensemble mean.  ``prior_grad`` (``(B, n_cg)``,
    from :func:`prior_gradient`): the priors' gradient precomputed, so only the networks are evaluated.
    """
    k = getattr(model, "n_members", 1)
    if per_member and k > 1:
        q = Q.detach().unsqueeze(0).expand(k, -1, -1).clone().requires_grad_(True)  # one copy per member
        e = torch.stack([model.member_energies(q[i], temperature)[:, i] for i in range(k)])  # (K, B)
        if prior_grad is None:
            e = e + torch.stack([model.walls(q[i]) + model.support_prior(q[i]) for i in range(k)])
        (grad,) = torch.autograd.grad(e.sum(), q, create_graph=create_graph)  # (K, B, N)
    else:
        q = Q.detach().requires_grad_(True)
        if prior_grad is None:
            v = model(q, temperature) if temperature is not None else model(q)
        else:
            v = model.member_energies(q, temperature).mean(-1)
        (grad,) = torch.autograd.grad(v.sum(), q, create_graph=create_graph)
    if prior_grad is not None:
        grad = grad + prior_grad
    return (((grad - g) * scale / kT) ** 2).mean()


def _lr_at(epoch: int, epochs: int, lr: float, final_fraction: float) -> float:
    """Cosine decay from ``lr`` (epoch 0) to ``final_fraction * lr`` (last epoch)."""
    if epochs <= 1:
        return lr
    t = epoch / (epochs - 1)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


def _evaluate(model, Q, g, scale, kT, batch, prior_grad=None):
    total = 0.0
    for s in range(0, Q.shape[0], batch):
        with torch.enable_grad():
            loss = force_matching_loss(model, Q[s:s + batch], g[s:s + batch], scale, kT, create_graph=False,
                                       prior_grad=None if prior_grad is None else prior_grad[s:s + batch])
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


def resume_checkpoint(path: str, settings: dict, free: Sequence[str] = ("epochs", "patience")) -> dict:
    """Load the checkpoint at ``path``, refusing it unless it is of the same kind of training and every
    setting but those in ``free`` matches ``settings`` (``settings["kind"]``: absent for force matching)."""
    ck = _load_checkpoint(path)
    old = ck.get("settings") or {}
    if old.get("kind") != settings.get("kind"):
        fail("resume", f"the checkpoint {path} is from {old.get('kind') or 'force-matching'} training, not "
             f"{settings.get('kind') or 'force-matching'}", "choose another --out, or delete the checkpoint and train "
             "without --resume")
    diff = [k for k in settings if k not in free and old.get(k) != settings[k]]
    if diff:
        fail("resume", f"the checkpoint {path} was made with different settings ({', '.join(diff)}: "
             f"{[old.get(k) for k in diff]} vs {[settings[k] for k in diff]})",
             "resume with the same options, or train without --resume")
    return ck


def finished_run(out: str, settings: dict, t_start: float, phases: Sequence[str] | None = None) -> TrainResult:
    """The finished model at ``out`` as a :class:`TrainResult`, for ``resume`` once the checkpoint is gone.

    Refuses a model made by another kind of training (``settings["kind"]``, absent for force matching);
    ``phases``: keep only history entries of these phases (a refinement's model carries its start's history too).
    """
    from latentlab.potentials import load_model

    model = load_model(out)
    meta = model.metadata
    kind, want = (meta.get("training") or {}).get("kind"), settings.get("kind", "force-matching")
    if kind != want:
        fail("resume", f"{out} holds a finished {kind or 'unknown'} model, not {want}",
             "choose another --out, or train without --resume to overwrite it")
    history = [h for h in meta.get("history", []) if phases is None or h.get("phase") in phases]
    return TrainResult(model, history, float(meta.get("best_val_loss", math.nan)), out, meta.get("stopped", "completed"),
                       None, time.perf_counter() - t_start, meta.get("training", settings))


def train_force_matching(dataset, map_spec: str | None = None, *, epochs: int = DEFAULTS["epochs"],
                         lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
                         hidden: Sequence[int] = DEFAULTS["hidden"], convention: str = "consistent",
                         method: str = "auto", device="auto", seed: int = 0,
                         val_fraction: float = DEFAULTS["val_fraction"], out: str | None = None, resume: bool = False,
                         callback: Callable[[dict], bool | None] | None = None, progress: bool = False,
                         patience: int = DEFAULTS["patience"], n_blocks: int = DEFAULTS["n_blocks"],
                         lr_final_fraction: float = DEFAULTS["lr_final_fraction"],
                         weight_decay: float = DEFAULTS["weight_decay"], prior: bool = True,
                         activation: str = "silu", dtype=torch.float32, mass=None,
                         ema_decay: float = DEFAULTS["ema_decay"], refit: bool = True,
                         ensemble: int = DEFAULTS["ensemble"], support_prior: bool = DEFAULTS["support_prior"],
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
    method : {"auto", "mass-weighted", "pseudo-inverse", "rigid-rotation"}
        Estimator of the mean force (:func:`latentlab.training.targets.resolve_method`): ``auto`` takes the
        rigid-rotation estimator for dihedral maps (alanine dipeptide phi/psi: 4x and 28x less variance
        of g than mass-weighted; exact-density JS ratio 1.4-1.8 -> 0.25-0.48 over seeds), else mass-weighted.
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
    support_prior : bool
        Also the data-support prior (:meth:`CGPotential.support_prior`): zero where the data's kernel
        density is above its 2 % quantile over the frames, rising below.  Force matching knows nothing
        where there are no frames and little where there are a handful; without this prior the MLP
        is too flat there and over-populates sparse tails (chignolin, 7.5k frames: JS ratio 1.6 -> 0.95
        for seed 0, 2.4 -> 1.1 for seed 1; alanine phi/psi 2.3 -> 2.1, 2.1 -> 1.7).
    dtype : torch dtype of the training (float32 default).
    ema_decay : float
        Validation, early stopping and the returned model use an exponential moving average of the
        weights with this decay per batch (0 disables).  With force-matching targets that are mostly
        noise, the last iterate of Adam wanders; the average does not (Polyak & Juditsky 1992).
    ensemble : int
        Number of independently initialised MLPs trained side by side on the same batches, each on its
        own loss; V is their mean (validation uses the mean).  Measured on alanine dipeptide (phi/psi,
        seed 0): JS ratio 2.33 for one MLP, 2.18 for 4 members trained side by side (5x the time);
        averaging 5 separately trained models (different seeds, hence different validation blocks
        and shuffles) gave 1.58 against single-model ratios of 1.5-2.3.  Default 1.
    refit : bool
        After the validation phase, train the same initial model on *all* frames for the number of
        epochs that was best on the held-out blocks, and return that model (history entries carry
        ``phase``: "validate" or "refit"; in the refit phase ``val_loss`` is measured on frames that are
        now trained on).  Force matching on ~10^4 frames is data-limited: leaving 10 % of the time
        blocks out changed the learned alanine-dipeptide phi/psi distribution by several times the
        data's own noise floor.
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
                "prior": bool(prior), "activation": activation, "dtype": str(dtype).replace("torch.", ""),
                "ema_decay": float(ema_decay), "refit": bool(refit), "ensemble": int(ensemble),
                "support_prior": bool(support_prior)}
    checkpoint = None
    if resume and out is not None:
        if os.path.exists(ckpt):  # a resumed run shares every setting but epochs and patience
            checkpoint = resume_checkpoint(ckpt, settings)
        elif os.path.exists(out):
            return finished_run(out, settings, t_start)

    def emit(event: dict) -> bool:
        return bool(callback(event)) if callback is not None else False

    emit({"event": "prepare", "message": "computing force-matching targets"})
    cg_map = ds.map(map_spec)
    method_used = resolve_method(method, cg_map, ds)
    mass = mass if mass is not None else mass_function(cg_map, ds)
    Q, g = prepare_targets(ds, cg_map, convention, method_used, device=dev, dtype=dtype, mass=mass)
    train_idx, val_idx = time_block_split(Q.shape[0], val_fraction, n_blocks, seed)
    train_idx, val_idx = train_idx.to(dev), val_idx.to(dev)
    kT = ds.kT

    all_idx = torch.arange(Q.shape[0], device=dev)

    def fresh():
        """Model, EMA copy and optimiser, initialised from the seed (the same for both phases)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            m = CGPotential.from_data(Q.double().cpu(), periodic=cg_map.periodic, temperature=ds.temperature,
                                      prior=prior, hidden=hidden, activation=activation, names=cg_map.names,
                                      units=cg_map.units, n_members=ensemble, support=support_prior)
        m = m.to(device=dev, dtype=dtype)
        e = copy.deepcopy(m).requires_grad_(False) if ema_decay > 0 else m
        return m, e, torch.optim.Adam(m.parameters(), lr=float(lr), weight_decay=float(weight_decay))

    model, ema, opt = fresh()
    scale = model.std.to(device=dev, dtype=dtype)
    g_prior = prior_gradient(model, Q)  # (F, N): the priors are fixed, their gradient is computed once
    history: list[dict] = []
    best_val, best_state, bad_epochs, start_epoch = math.inf, None, 0, 0
    phase, best_epoch, refit_epochs = "validate", 0, 0
    if checkpoint is not None:
        phase = checkpoint.get("phase", "validate")
        best_epoch, refit_epochs = int(checkpoint.get("best_epoch", 0)), int(checkpoint.get("refit_epochs", 0))
        model.load_state_dict(checkpoint["model"]["state_dict"])
        if ema is not model:
            ema.load_state_dict(checkpoint["ema"])
        opt.load_state_dict(checkpoint["optimizer"])
        history = list(checkpoint["history"])
        best_val = float(checkpoint["best_val_loss"])
        best_state = checkpoint["best_state"]
        bad_epochs = int(checkpoint["bad_epochs"])
        start_epoch = int(checkpoint["epoch"])
    if best_state is None:
        best_state = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}

    stride = max(1, Q.shape[0] // 2000)
    metadata = {
        "map": cg_map.spec or settings["map"], "names": cg_map.names, "units": cg_map.units,
        "periodic": cg_map.periodic, "bounds": [None if b is None else [float(b[0]), float(b[1])] for b in cg_map.bounds],
        "temperature": float(ds.temperature), "kT": float(kT), "convention": convention, "method": method_used,
        "potential": f"V(Q) = A_pmf(Q) {'-' if convention == 'consistent' else '+'} (kT/2) ln det A(Q)"
                     if convention != "pmf" else "V(Q) = A_pmf(Q)",
        "energy_unit": "kJ/mol", "mass_model": mass.to_dict(), "consistency": mass.consistency,
        "dataset": {"name": ds.name, "source": str(ds.source), "n_frames": int(ds.n_frames)},
        "training": {"kind": "force-matching", **settings, "n_train": int(train_idx.numel()),
                     "n_val": int(val_idx.numel()), "device": str(dev)},
        "validation": "time blocks" + (" (then refit on all frames for the best epoch count)" if refit else ""),
        "start_Q": Q[::stride].detach().cpu().double(), "versions": versions(),
    }

    def snapshot(epoch: int):
        return {"format": CHECKPOINT_FORMAT, "settings": settings, "epoch": epoch, "history": history,
                "phase": phase, "best_epoch": best_epoch, "refit_epochs": refit_epochs,
                "model": model_payload(model, {}), "optimizer": opt.state_dict(), "best_val_loss": best_val,
                "best_state": best_state, "bad_epochs": bad_epochs, "ema": ema.state_dict()}

    def finish(stopped: str) -> TrainResult:
        final = CGPotential(**model.config())
        final.load_state_dict(best_state)
        final.metadata = {**metadata, "history": history, "best_val_loss": best_val, "stopped": stopped,
                          "best_epoch": best_epoch, "refit_epochs": refit_epochs if phase == "refit" else 0}
        if out is not None:
            save_model(final, out)
            if stopped != "callback" and ckpt and os.path.exists(ckpt):
                os.remove(ckpt)
        return TrainResult(final, history, best_val, out, stopped, ckpt if stopped == "callback" else None,
                           time.perf_counter() - t_start, settings)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs + refit_epochs, initial=len(history), unit="epoch", desc="force matching")
    last_call = time.perf_counter()
    stopped = "completed"
    try:
        while True:
            n_epochs = epochs if phase == "validate" else refit_epochs
            fit_idx = train_idx if phase == "validate" else all_idx
            n_fit = fit_idx.numel()
            n_batches = max(1, math.ceil(n_fit / int(batch_size)))
            for epoch in range(start_epoch, n_epochs):
                t0 = time.perf_counter()
                lr_e = _lr_at(epoch, n_epochs, float(lr), lr_final_fraction)
                for group in opt.param_groups:
                    group["lr"] = lr_e
                model.train()
                gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + epoch + (0 if phase == "validate" else 500_000))
                order = fit_idx[torch.randperm(n_fit, generator=gen).to(dev)]
                running = 0.0
                for b in range(n_batches):
                    idx = order[b * int(batch_size):(b + 1) * int(batch_size)]
                    loss = force_matching_loss(model, Q[idx], g[idx], scale, kT, per_member=True, prior_grad=g_prior[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if ema is not model:
                        with torch.no_grad():
                            for pe, pm in zip(ema.parameters(), model.parameters()):
                                pe.lerp_(pm, 1.0 - ema_decay)
                    running += float(loss.detach())
                    if callback is not None and time.perf_counter() - last_call >= callback_interval:
                        last_call = time.perf_counter()
                        if emit({"event": "batch", "epoch": len(history) + 1, "batch": b + 1, "n_batches": n_batches,
                                 "train_loss": running / (b + 1), "phase": phase}):
                            stopped = "callback"
                            break
                if stopped == "callback":
                    break  # the partial epoch is dropped; the checkpoint holds the last complete one
                model.eval()
                val = _evaluate(ema, Q[val_idx], g[val_idx], scale, kT, 4096, g_prior[val_idx])
                improved = False
                if phase == "validate":
                    improved = val < best_val
                    if improved:
                        best_val, bad_epochs, best_epoch = val, 0, epoch + 1
                        best_state = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}
                    else:
                        bad_epochs += 1
                else:  # refit: the held-out frames are training frames now; the last EMA state is the model
                    best_state = {k: v.detach().cpu().clone() for k, v in ema.state_dict().items()}
                entry = {"epoch": len(history) + 1, "train_loss": running / n_batches, "val_loss": val, "lr": lr_e,
                         "seconds": time.perf_counter() - t0, "phase": phase}
                history.append(entry)
                if ckpt is not None:
                    with atomic_output(ckpt) as tmp:
                        torch.save(snapshot(epoch + 1), tmp)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(phase=phase, train=f"{entry['train_loss']:.4g}", val=f"{val:.4g}",
                                    best=f"{best_val:.4g}")
                if emit({"event": "epoch", "epochs": epochs + refit_epochs, "elapsed": time.perf_counter() - t_start,
                         "best_val_loss": best_val, "improved": improved, **entry}):
                    stopped = "callback"
                    break
                if phase == "validate" and patience and bad_epochs >= int(patience):
                    stopped = "early-stopping"
                    break
            if stopped == "callback" or phase == "refit" or not refit:
                break
            # Phase 2: the same initial model trained on every frame for the number of epochs
            # that was best on the held-out blocks.
            phase, refit_epochs, start_epoch = "refit", max(1, best_epoch), 0
            model, ema, opt = fresh()
            if bar is not None:
                bar.total = len(history) + refit_epochs
                bar.refresh()
            if ckpt is not None:
                with atomic_output(ckpt) as tmp:
                    torch.save(snapshot(0), tmp)
    finally:
        if bar is not None:
            bar.close()
    return finish(stopped)
