"""Training (force matching, the library's Trainer) in a worker process, with a live loss history; model files."""

from __future__ import annotations

import os

import param

from .common import JobState, cuda_available, device_choices, message, models_directory


def _training_defaults() -> dict:
    from latentlab.training.defaults import DEFAULTS

    return DEFAULTS


def _conventions() -> list[str]:
    from latentlab.conventions import CONVENTIONS

    return list(CONVENTIONS)


class TrainState(JobState):
    """Force-matching training of a CG potential; live history; save/load; the exact model of analytic systems.

    The defaults are the library's (:data:`latentlab.training.defaults.DEFAULTS`, those of ``latentlab train``).
    """

    width = param.Integer(default=_training_defaults()["hidden"][0], bounds=(4, 2048), doc="hidden layer width")
    depth = param.Integer(default=len(_training_defaults()["hidden"]), bounds=(1, 8), doc="hidden layers")
    epochs = param.Integer(default=_training_defaults()["epochs"], bounds=(1, 100000))
    lr = param.Number(default=_training_defaults()["lr"], bounds=(1e-6, 1.0))
    batch_size = param.Integer(default=_training_defaults()["batch_size"], bounds=(8, 1 << 20))
    convention = param.Selector(default="consistent", objects=_conventions())
    device = param.Selector(default="cpu", objects=["cpu", "cuda"])
    val_fraction = param.Number(default=_training_defaults()["val_fraction"], bounds=(0.01, 0.9))
    seed = param.Integer(default=0)

    running = param.Boolean(default=False, doc="queued or training")
    history = param.List(default=[], doc="one dict per epoch: epoch, train_loss, val_loss, lr, seconds")
    model = param.Parameter(default=None, doc="the trained, loaded or exact latentlab.model.CGModel")
    model_label = param.String(default="")
    parity = param.Dict(default=None, allow_None=True, doc="predicted and target grad V")
    path = param.String(default="", doc="model file of this session")

    def __init__(self, session, **params):
        super().__init__(session, **params)
        self.cuda = cuda_available()
        self.param.device.objects = device_choices()
        self.path = os.path.join(models_directory(), f"latentlab-model-{session.id}.pt")
        self.result = None
        self.on_trained = None  # called (on the queue's thread) after a training run that was not stopped

    def settings(self) -> dict:
        """The Trainer arguments of this run."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size,
                "hidden": (self.width,) * self.depth, "device": self.device, "seed": self.seed, "val_fraction": self.val_fraction,
                "convention": self.convention}

    def start(self, blocking: bool = False) -> bool:
        """Queue a training run on the session's data set and map."""
        from latentlab_app.worker import map_info

        cg_map = self.session.map.cg_map
        if self.cannot_start(None if cg_map is not None else "choose a map first"):
            return False
        if self.device == "cuda" and not self.cuda:
            self.error = "CUDA is not available here; use cpu"
            return False
        self.param.update(running=True, history=[], error="", status="queued", parity=None)
        self.submit("train", {"source": self.session.data.load_source, "map": map_info(cg_map),
                              "settings": self.settings()}, on_event=self.on_trainer_event, on_done=self._done)
        self.bump()
        if blocking:
            self.wait()
        return True

    def trainer_event(self, what: str, event: dict) -> None:
        if what == "batch":
            self.status = (f"epoch {event['epoch']}: batch {event['batch']}/{event['n_batches']}, "
                           f"train {event['train_loss']:.4g}")
        elif what == "epoch":
            with self._lock:
                self.history = self.history + [dict(event)]
            val = event.get("val_loss")
            self.status = f"epoch {event['epoch']}: train {event['train_loss']:.4g}" + (
                "" if val is None else f", val {val:.4g}")

    def _done(self, job) -> None:
        self.finish(job, "training", self._trained)

    def _trained(self, r: dict) -> None:
        from latentlab_app.worker import model_from_bytes

        self.result = r
        if r["model"] is None:
            self.status = "stopped before the first epoch"
            return
        model = model_from_bytes(r["model"])
        stopped = r["stopped"] == "callback"
        n = len(r["history"])
        refit = sum(h.get("phase") == "refit" for h in r["history"])
        epochs = f"{n - refit} epoch{'s' * (n - refit != 1)}" + (f" + {refit} refitting on all frames" if refit else "")
        self.param.update(history=list(r["history"]), parity=r["parity"], model=model,
                          model_label=f"trained ({self.convention}, {epochs})",
                          status=("stopped" if stopped else "finished") +
                          f" after {epochs}; best val loss {r['best_val_loss']:.4g}")
        if not stopped and self.on_trained is not None:
            self.on_trained()

    # ------------------------------------------------------------------ files and exact models
    def save(self, path: str | None = None, overwrite: bool = False) -> bool:
        """Write the model (default: this session's file); an existing file is refused unless ``overwrite``."""
        if self.model is None:
            self.error = "no trained model to save"
            return False
        return self.save_file(self.model.save, "model", path, overwrite, inputs=[self.session.data.load_source])

    def load(self, path: str | None = None) -> bool:
        from latentlab.model import CGModel

        path = path or self.path
        try:
            model = CGModel.load(path)
        except Exception as err:
            self.error = f"cannot load model {path!r}: {message(err)}"
            return False
        self.param.update(model=model, model_label=f"loaded from {os.path.basename(path)}", error="",
                          status=f"loaded {path}", parity=None)
        self.bump()
        return True

    def use_exact(self) -> bool:
        """For an analytic system with a known PMF: the exact model (no training needed)."""
        from latentlab.data import ANALYTIC, analytic_system
        from latentlab.model import CGModel
        from latentlab.reconstruct import latent_coordinates

        ds = self.session.data.dataset
        if ds.name not in ANALYTIC:
            self.error = f"{ds.name!r} has no exact PMF; train a model"
            return False
        try:
            system = analytic_system(ds.name, ds.temperature)
            start = latent_coordinates(system.cg_map(), ds.positions)  # walkers start on data frames
            model = CGModel.exact(system, self.convention, start_points=start)
        except ValueError:
            self.error = f"{ds.name!r} has no exact PMF in latent space; train a model"
            return False
        self.param.update(model=model, error="", model_label=f"exact PMF of {ds.name} ({self.convention})",
                          status="using the exact PMF", parity=None)
        self.bump()
        return True
