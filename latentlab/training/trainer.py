"""The one training loop: hyper-parameters at construction, ``fit(data, cg_map) -> CGModel``.

:class:`Trainer` owns everything every kind of training shares: seeding, the split into training,
validation and hold-out frames (:mod:`latentlab.training.splits`), Adam with a cosine learning-rate decay,
an exponential moving average (EMA) of the weights, early stopping, the optional refit on all frames, a
checkpoint after every epoch with bit-for-bit resume, progress bars, callbacks and cancellation.  What is
minimised comes from an *objective* (:class:`Objective`): force matching, relative entropy or temperature
matching::

    model = Trainer(ForceMatching(), epochs=60, seed=0).fit(dataset, cg_map)
    model.save("chig.pt")

Determinism: the initial weights, the validation blocks and the shuffle of epoch e depend only on the
seed (and e), so a run killed and resumed from its checkpoint ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from latentlab.forces.targets import resolve_device
from latentlab.io import atomic_output
from latentlab.training.splits import split_frames
from latentlab.validation import check_positive, fail

CHECKPOINT_FORMAT = "latentlab-checkpoint"
CHECKPOINT_VERSION = 2


#: Fewer training frames than this (or validation frames than a tenth of it) get a note before training.
FEW_FRAMES = 1000


@dataclass
class TrainResult:
    """What a :meth:`Trainer.fit` call did (``trainer.result_``).

    Attributes
    ----------
    model : CGModel
    history : list of dict
        One entry per epoch: ``epoch, train_loss, val_loss, lr, seconds, phase``.
    best_val_loss : float
    path : str or None
        Where the model file was written.
    stopped : str
        ``"completed"``, ``"early-stopping"`` or ``"callback"`` (stopped by the caller).
    checkpoint : str or None
        The checkpoint kept for ``resume`` when the run was stopped.
    seconds : float
    settings : dict
    """

    model: object
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


class Objective:
    """What a :class:`Trainer` minimises.  Subclasses set ``kind`` and ``defaults`` and implement the hooks.

    ``defaults`` are the trainer settings this objective is tuned for (``epochs``, ``lr``, ``batch_size``,
    ``patience``, ``ema_decay``, ``refit``, ``lr_final_fraction``); a Trainer argument left at None takes them.
    """

    kind = "objective"
    defaults: dict = {}
    #: Whether the validation loss is an honest held-out score (early stopping uses it).
    early_stopping = True

    def settings(self) -> dict:
        """The objective's own hyper-parameters (recorded; a resumed run must match them)."""
        return {}

    def configure(self, datasets: list, cg_map) -> None:
        """Settle choices that depend on the data and the map (cheap; before ``defaults`` is read)."""

    def prepare(self, trainer: "Trainer", datasets: list, cg_map, split) -> None:
        """Compute what training needs (targets, mass model, grids) once, before the first epoch."""

    def initial_potential(self, trainer: "Trainer") -> nn.Module:
        """A fresh potential (called under the trainer's seed)."""
        raise NotImplementedError

    def extra_module(self, trainer: "Trainer") -> nn.Module | None:
        """Trainable parameters besides the potential (e.g. an energy offset), or None."""
        return None

    def batches(self, trainer: "Trainer", epoch: int, phase: str) -> list[torch.Tensor]:
        """Index batches of epoch ``epoch`` (shuffled by the seed and the epoch)."""
        raise NotImplementedError

    def loss(self, module: nn.ModuleDict, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_step(self, module: nn.ModuleDict, iteration: int) -> None:
        """Called after every optimiser step (e.g. to let walkers follow the new V)."""

    def begin(self, trainer: "Trainer", module: nn.ModuleDict, resumed: bool) -> None:
        """Called once the module exists (fresh or loaded from a checkpoint), before the first epoch."""

    def validate(self, module: nn.ModuleDict, epoch: int) -> tuple[float, bool, dict]:
        """``(validation loss, whether it is new this epoch, extra history fields)``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Objective state a checkpoint must keep (walkers, generators)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finish(self, trainer: "Trainer", module: nn.ModuleDict, record: dict):
        """The finished :class:`latentlab.model.CGModel` from the best weights and the training record."""
        raise NotImplementedError


class Trainer:
    """Train a CG potential (see the module docstring).

    Parameters
    ----------
    objective : Objective
        :class:`~latentlab.training.ForceMatching` (default),
        :class:`~latentlab.training.RelativeEntropy` or
        :class:`~latentlab.training.TemperatureMatching`.
    epochs, lr, batch_size, patience, ema_decay, refit, lr_final_fraction : optional
        Maximum epochs (iterations for relative entropy); initial Adam learning rate, decayed by a cosine to
        ``lr_final_fraction * lr``; frames per batch; early stopping after ``patience`` epochs without a
        lower validation loss (0 disables); EMA decay per batch of the weights that are validated and
        returned (0 disables); whether to refit on all non-held-out frames for the best epoch count.
        None takes the objective's default (``objective.defaults``).
    hidden, activation, ensemble, prior, support_prior : network and priors (:class:`latentlab.potentials.CGPotential`).
    val_fraction, n_blocks : validation time blocks (:func:`latentlab.training.splits.split_frames`).
    holdout : float
        Fraction of every trajectory (its end) never trained or validated on, kept for scoring.
    weight_decay : float
    grad_clip : float, optional
        Clip the gradient norm (None: no clipping).
    seed : int
        Initial weights, validation blocks, shuffling: runs are reproducible.
    device : {"auto", "cpu", "cuda"}
    dtype : torch dtype, optional
        Precision of training (the objective's default: float32, float64 for relative entropy).
    out : str, optional
        Model file, written at the end and when stopped; the checkpoint is ``out + ".ckpt"``.
    resume : bool
        Continue from ``out + ".ckpt"`` (settings must match, except epochs and patience); a finished model
        at ``out`` with the same settings is returned as it is.
    callback : callable, optional
        ``callback(event: dict)``: ``{"event": "message", "message"}`` (what is being prepared),
        ``{"event": "batch", "epoch", "batch", "n_batches", "train_loss", "phase"}`` at most every
        ``callback_interval`` s, ``{"event": "epoch", "epoch", "epochs", "train_loss", "val_loss", "lr", "seconds",
        "elapsed", "best_val_loss", "improved", "phase"}`` after every epoch.  Returning True stops training
        within one batch; the best model so far is written to ``out`` and the checkpoint kept for ``resume``.
    progress : bool
        tqdm progress bar with the losses.
    distributed : bool
        Data-parallel over the processes of a ``torch.distributed`` group (:mod:`latentlab.training.distributed`;
        ``torchrun ... --distributed``): each process takes its share of every batch and the gradients are
        summed before each step; rank 0 alone writes, reports and calls back.
    """

    def __init__(self, objective: Objective | None = None, *, epochs: int | None = None, lr: float | None = None,
                 batch_size: int | None = None, patience: int | None = None, ema_decay: float | None = None,
                 refit: bool | None = None, lr_final_fraction: float | None = None, hidden=(128, 128, 128),
                 activation: str = "silu", ensemble: int = 1, prior: bool = True, support_prior: bool = True,
                 val_fraction: float = 0.1, n_blocks: int = 20, holdout: float = 0.0, weight_decay: float = 0.0,
                 grad_clip: float | None = None, seed: int = 0, device="auto", dtype=None,
                 out: str | None = None, resume: bool = False, callback: Callable[[dict], bool | None] | None = None,
                 progress: bool = False, callback_interval: float = 0.2, distributed: bool = False):
        if objective is None:
            from latentlab.training.force_matching import ForceMatching

            objective = ForceMatching()
        self.objective = objective
        #: What was asked for; None takes the objective's default when :meth:`fit` knows the data and the map.
        self.requested = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "patience": patience,
                          "ema_decay": ema_decay, "refit": refit, "lr_final_fraction": lr_final_fraction, "dtype": dtype}
        self._resolve_loop_settings(objective.defaults)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation, self.ensemble = activation, int(ensemble)
        self.prior, self.support_prior = bool(prior), bool(prior and support_prior)
        self.val_fraction, self.n_blocks, self.holdout = float(val_fraction), int(n_blocks), float(holdout)
        self.weight_decay = float(weight_decay)
        self.grad_clip = None if grad_clip is None else check_positive(grad_clip, "grad_clip")
        self.seed, self.device = int(seed), device
        self.out, self.resume = out, bool(resume)
        self.callback, self.progress, self.callback_interval = callback, bool(progress), float(callback_interval)
        self.parallel = None
        if distributed:
            from latentlab.training.distributed import init_from_environment

            if str(device) == "auto":  # decided before joining: NCCL on CUDA, one GPU per process
                device = self.device = "cuda" if torch.cuda.is_available() else "cpu"
            self.parallel = init_from_environment(str(device))
            if not self.parallel.is_main:  # one voice: rank 0 reports, writes and calls back
                self.callback, self.progress = None, False
            if str(device).startswith("cuda"):
                self.device = f"cuda:{int(os.environ.get('LOCAL_RANK', self.parallel.rank))}"
        self._stop = threading.Event()
        self.result_: TrainResult | None = None

    def _resolve_loop_settings(self, defaults: dict) -> None:
        r = self.requested
        pick = lambda key: defaults.get(key) if r[key] is None else r[key]  # noqa: E731
        for key, cast in (("epochs", int), ("lr", float), ("batch_size", int), ("patience", int),
                          ("ema_decay", float), ("refit", bool), ("lr_final_fraction", float)):
            value = pick(key)
            setattr(self, key, None if value is None else cast(value))
        self.dtype = pick("dtype") or torch.float32
        if self.epochs is not None and self.epochs < 1:
            fail("epochs", f"got {self.epochs}", "train for at least 1 epoch")
        if self.batch_size is not None and self.batch_size < 1:
            fail("batch_size", f"got {self.batch_size}", "use a positive batch size, e.g. 256")
        if self.lr is not None:
            check_positive(self.lr, "lr")
        if self.ema_decay is not None and not 0.0 <= self.ema_decay < 1.0:
            fail("ema_decay", f"got {self.ema_decay}", "use a decay in [0, 1), e.g. 0.995 (0 disables the average)")

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Ask a running :meth:`fit` to stop after the current batch (thread-safe)."""
        self._stop.set()

    def settings(self) -> dict:
        """Every hyper-parameter that shapes the result (recorded in the model; compared on resume)."""
        return {"kind": self.objective.kind, "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "patience": self.patience, "ema_decay": self.ema_decay, "refit": self.refit,
                "lr_final_fraction": self.lr_final_fraction, "hidden": list(self.hidden), "activation": self.activation,
                "ensemble": self.ensemble, "prior": self.prior, "support_prior": self.support_prior,
                "val_fraction": self.val_fraction, "n_blocks": self.n_blocks, "holdout": self.holdout,
                "weight_decay": self.weight_decay, "grad_clip": self.grad_clip, "seed": self.seed,
                "dtype": str(self.dtype).replace("torch.", ""), **self.objective.settings()}

    @property
    def checkpoint_path(self) -> str | None:
        return None if self.out is None else os.fspath(self.out) + ".ckpt"

    def emit(self, event: dict) -> bool:
        """Send ``event`` to the callback; True when the caller (or :meth:`stop`) asks to stop.

        During preparation (``message`` events) a stop request ends :meth:`fit` at once (no model).
        """
        wants = bool(self.callback(event)) if self.callback is not None else False
        if (wants or self._stop.is_set()) and event.get("event") == "message":
            raise _Stopped
        return wants or self._stop.is_set()

    def fit(self, data, cg_map=None):
        """Train on ``data`` (a Dataset, a built-in name or path, or a list of them for temperature matching).

        ``cg_map``: the map object (or a spec string, built on the first data set); default: the data
        set's default map.  Returns the finished :class:`latentlab.model.CGModel` (``self.result_`` has the
        history and how the run ended), or None when stopped before the first epoch.
        """
        from latentlab.data import load

        t_start = time.perf_counter()
        self._stop.clear()
        datasets = [load(d) for d in (data if isinstance(data, (list, tuple)) else [data])]
        ds = datasets[0]
        if cg_map is None or isinstance(cg_map, str):
            cg_map = ds.map(cg_map)
        self.objective.configure(datasets, cg_map)
        if self.parallel is not None and self.objective.kind == "relative-entropy":
            fail("distributed", "relative entropy does not train data-parallel (its walkers are one chain)",
                 "train it in one process, or use force matching / temperature matching")
        self._resolve_loop_settings(self.objective.defaults)
        self.device_ = resolve_device(self.device)
        settings = {**self.settings(), "map": cg_map.spec, "datasets": [_identity(d) for d in datasets]}
        checkpoint = self._resume(settings, t_start)
        if isinstance(checkpoint, TrainResult):
            self.result_ = checkpoint
            return checkpoint.model
        split = split_frames(ds.n_frames, self.val_fraction, self.n_blocks, self.seed, self.holdout,
                             ds.trajectory_slices())
        self.cg_map, self.datasets, self.split = cg_map, datasets, split
        try:
            self.emit({"event": "message", "message": f"preparing {self.objective.kind} on {ds.name or ds.source}"})
            n_train, n_val = int(split.train.numel()), int(split.validation.numel())
            if n_train < FEW_FRAMES or n_val < FEW_FRAMES // 10:
                self.emit({"event": "message", "message": f"note: only {n_train} training and {n_val} validation frames: "
                           "V is fitted to few samples and early stopping follows a noisy validation loss; a longer "
                           "trajectory (latentlab generate --ns) gives a better model"})
            self.objective.prepare(self, datasets, cg_map, split)
            self.emit({"event": "message", "message": f"training ({self.objective.kind})"})
        except _Stopped:
            self.result_ = TrainResult(None, [], math.nan, None, "callback", None, time.perf_counter() - t_start, settings)
            return None
        loop = _Loop(self, settings, checkpoint, t_start)
        self.result_ = loop.run()
        return self.result_.model

    # ------------------------------------------------------------------ resume
    def _resume(self, settings: dict, t_start: float):
        """The checkpoint to continue from, a finished run to return, or None (start afresh)."""
        if not self.resume or self.out is None:
            return None
        ckpt = self.checkpoint_path
        if os.path.exists(ckpt):
            try:
                state = torch.load(ckpt, map_location="cpu", weights_only=True)
            except Exception as err:
                fail("resume", f"the checkpoint {ckpt} is unreadable ({type(err).__name__})",
                     "delete it and train without --resume")
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
                fail("resume", f"{ckpt} is not a latentlab training checkpoint", "delete it and train without --resume")
            if state.get("version") != CHECKPOINT_VERSION:
                fail("resume", f"{ckpt} was written by another latentlab version", "delete it and train without --resume")
            _check_same(ckpt, state["settings"], settings)
            return state
        if os.path.exists(self.out):
            from latentlab.model import CGModel

            model = CGModel.load(self.out)
            _check_same(self.out, model.training.get("settings") or {}, settings)
            t = model.training
            return TrainResult(model, list(t.get("history", [])), float(t.get("best_val_loss", math.nan)), self.out,
                               t.get("stopped", "completed"), None, time.perf_counter() - t_start, settings)
        self.emit({"event": "message", "message": f"no checkpoint {ckpt}: training from the start"})
        return None


class _Stopped(Exception):
    """Raised inside :meth:`Trainer.fit` when a stop is requested before training has begun."""


def _identity(ds) -> dict:
    """Which data a model was trained on: name, source, frames, temperature."""
    return {"name": ds.name, "source": str(ds.source), "n_frames": int(ds.n_frames), "temperature": float(ds.temperature)}


def _check_same(path: str, old: dict, new: dict, free=("epochs", "patience")) -> None:
    if old.get("kind") != new.get("kind"):
        fail("resume", f"{path} is from {old.get('kind') or 'another kind of'} training, not {new.get('kind')}",
             "choose another --out, or train without --resume")
    diff = [k for k in new if k not in free and old.get(k) != new[k]]
    if diff:
        fail("resume", f"{path} was made with different settings ({', '.join(diff)}: "
             f"{[old.get(k) for k in diff]} vs {[new[k] for k in diff]})",
             "resume with the same options, or train without --resume")


def lr_at(epoch: int, epochs: int, lr: float, final_fraction: float) -> float:
    """Cosine decay from ``lr`` (epoch 0) to ``final_fraction * lr`` (last epoch)."""
    if epochs <= 1:
        return lr
    t = epoch / (epochs - 1)
    return lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * t)))


class _Loop:
    """The epoch loop of one :meth:`Trainer.fit` call (validation phase, then the optional refit)."""

    def __init__(self, trainer: Trainer, settings: dict, checkpoint: dict | None, t_start: float):
        self.t, self.settings, self.t_start = trainer, settings, t_start
        self.obj = trainer.objective
        self.history: list[dict] = []
        self.best_val, self.best_state, self.bad, self.start_epoch = math.inf, None, 0, 0
        self.phase, self.best_epoch, self.refit_epochs = "validate", 0, 0
        self.module, self.ema, self.opt = self.fresh()
        if checkpoint is not None:
            self.phase = checkpoint["phase"]
            self.best_epoch, self.refit_epochs = int(checkpoint["best_epoch"]), int(checkpoint["refit_epochs"])
            self.module.load_state_dict(checkpoint["module"])
            if self.ema is not self.module:
                self.ema.load_state_dict(checkpoint["ema"])
            self.opt.load_state_dict(checkpoint["optimizer"])
            self.history = list(checkpoint["history"])
            self.best_val, self.best_state = float(checkpoint["best_val"]), checkpoint["best_state"]
            self.bad, self.start_epoch = int(checkpoint["bad"]), int(checkpoint["epoch"])
            self.obj.load_state_dict(checkpoint["objective"])
        if self.best_state is None:
            self.best_state = _cpu_state(self.ema)
        self.obj.begin(trainer, self.module, checkpoint is not None)

    def fresh(self):
        """Module (potential + extra parameters), EMA copy and optimiser, from the seed (same for both phases)."""
        t = self.t
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)
            module = nn.ModuleDict({"potential": self.obj.initial_potential(t)})
            extra = self.obj.extra_module(t)
            if extra is not None:
                module["extra"] = extra
        module = module.to(device=t.device_, dtype=t.dtype)
        ema = copy.deepcopy(module).requires_grad_(False) if t.ema_decay > 0 else module
        opt = torch.optim.Adam(module.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        return module, ema, opt

    def snapshot(self, epoch: int) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "settings": self.settings, "epoch": epoch,
                "phase": self.phase, "best_epoch": self.best_epoch, "refit_epochs": self.refit_epochs,
                "history": self.history, "module": self.module.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "best_val": self.best_val, "best_state": self.best_state,
                "bad": self.bad, "objective": self.obj.state_dict()}

    def save_checkpoint(self, epoch: int) -> None:
        ckpt = self.t.checkpoint_path
        if ckpt is not None and (self.t.parallel is None or self.t.parallel.is_main):
            with atomic_output(ckpt) as tmp:
                torch.save(self.snapshot(epoch), tmp)

    def run(self) -> TrainResult:
        t = self.t
        bar = None
        if t.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=t.epochs + self.refit_epochs, initial=len(self.history), unit="epoch", desc=self.obj.kind)
        stopped = "completed"
        try:
            while True:
                stopped = self.run_phase(bar)
                if stopped == "callback" or self.phase == "refit" or not t.refit:
                    break
                # Phase 2: the same initial model trained on every frame but the hold-out, for the number of
                # epochs that was best on the validation blocks.
                self.phase, self.refit_epochs, self.start_epoch = "refit", max(1, self.best_epoch), 0
                self.module, self.ema, self.opt = self.fresh()
                if bar is not None:
                    bar.total = len(self.history) + self.refit_epochs
                    bar.refresh()
                self.save_checkpoint(0)
        finally:
            if bar is not None:
                bar.close()
        if stopped == "completed" and self.phase == "refit":  # a finished refit reports why validation ended
            validated = sum(1 for h in self.history if h.get("phase") == "validate")
            stopped = "early-stopping" if validated < t.epochs else "completed"
        return self.finish(stopped)

    def run_phase(self, bar) -> str:
        t, obj = self.t, self.obj
        n_epochs = t.epochs if self.phase == "validate" else self.refit_epochs
        last_call = time.perf_counter()
        for epoch in range(self.start_epoch, n_epochs):
            t0 = time.perf_counter()
            lr_e = lr_at(epoch, n_epochs, t.lr, t.lr_final_fraction)
            for group in self.opt.param_groups:
                group["lr"] = lr_e
            self.module.train()
            batches = obj.batches(t, epoch, self.phase)
            running = 0.0
            par = t.parallel
            for b, batch in enumerate(batches):
                self.opt.zero_grad(set_to_none=True)
                if par is None:
                    loss = obj.loss(self.module, batch)
                    loss.backward()
                else:  # this process's share, weighted so that the summed gradient is the whole batch's
                    shard = par.shard(batch)
                    loss = (obj.loss(self.module, shard) * (shard.numel() / batch.numel()) if shard.numel()
                            else sum(p.sum() * 0.0 for p in self.module.parameters()))
                    loss.backward()
                    par.sum_gradients(self.module.parameters())
                    loss = torch.tensor(par.total(float(loss.detach()), t.device_))
                if t.grad_clip is not None:
                    nn.utils.clip_grad_norm_(self.module.parameters(), t.grad_clip)
                self.opt.step()
                if self.ema is not self.module:
                    with torch.no_grad():
                        for pe, pm in zip(self.ema.parameters(), self.module.parameters()):
                            pe.lerp_(pm, 1.0 - t.ema_decay)
                obj.after_step(self.module, epoch)
                running += float(loss.detach())
                wants_stop = False
                if time.perf_counter() - last_call >= t.callback_interval or t._stop.is_set():
                    last_call = time.perf_counter()
                    wants_stop = t.emit({"event": "batch", "epoch": len(self.history) + 1, "batch": b + 1,
                                         "n_batches": len(batches), "train_loss": running / (b + 1), "phase": self.phase})
                if par is not None:  # every process stops at the same batch
                    wants_stop = par.any(wants_stop, t.device_)
                if wants_stop:
                    return "callback"  # the partial epoch is dropped; the checkpoint holds the last complete one
            self.module.eval()
            val, fresh, extra = obj.validate(self.ema, epoch)
            improved = False
            if self.phase == "validate":
                if fresh:
                    improved = val < self.best_val
                    if improved:
                        self.best_val, self.bad, self.best_epoch = val, 0, epoch + 1
                        self.best_state = _cpu_state(self.ema)
                    elif obj.early_stopping:
                        self.bad += 1
            else:  # refit: the validation frames are training frames now; the last EMA state is the model
                self.best_state = _cpu_state(self.ema)
            entry = {"epoch": len(self.history) + 1, "train_loss": running / max(1, len(batches)), "val_loss": val,
                     "lr": lr_e, "seconds": time.perf_counter() - t0, "phase": self.phase, **extra}
            self.history.append(entry)
            self.save_checkpoint(epoch + 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(phase=self.phase, train=f"{entry['train_loss']:.4g}", val=f"{val:.4g}",
                                best=f"{self.best_val:.4g}")
            # the epochs this run will have: the maximum while validating; those validated plus the refit after
            total = t.epochs + self.refit_epochs if self.phase == "validate" else len(self.history) - 1 - epoch + n_epochs
            wants_stop = t.emit({"event": "epoch", "epochs": total,
                                 "elapsed": time.perf_counter() - self.t_start, "best_val_loss": self.best_val,
                                 "improved": improved, **entry})
            if t.parallel is not None:
                wants_stop = t.parallel.any(wants_stop, t.device_)
            if wants_stop:
                return "callback"
            if self.phase == "validate" and obj.early_stopping and t.patience and self.bad >= t.patience:
                return "early-stopping"
        return "completed"

    def finish(self, stopped: str) -> TrainResult:
        t = self.t
        final = copy.deepcopy(self.module).cpu()
        final.load_state_dict(self.best_state)
        record = {"kind": self.obj.kind, "settings": self.settings, "history": self.history,
                  "best_val_loss": self.best_val, "best_epoch": self.best_epoch,
                  "refit_epochs": self.refit_epochs if self.phase == "refit" else 0, "stopped": stopped,
                  "dataset": self.settings["datasets"][0], "frames": t.split.record(), "device": str(t.device_),
                  "seconds": time.perf_counter() - self.t_start}
        if t.parallel is not None:
            record["processes"] = t.parallel.world
        model = self.obj.finish(t, final, record)
        ckpt = t.checkpoint_path
        if t.parallel is not None:
            if not t.parallel.is_main:
                return TrainResult(model, self.history, self.best_val, None, stopped, None,
                                   time.perf_counter() - self.t_start, self.settings)
        if t.out is not None:
            model.save(t.out)
            if stopped != "callback" and ckpt and os.path.exists(ckpt):
                os.remove(ckpt)
        return TrainResult(model, self.history, self.best_val, t.out, stopped, ckpt if stopped == "callback" else None,
                           time.perf_counter() - self.t_start, self.settings)


def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
