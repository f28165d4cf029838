"""Flows without data: train a structured normalizing flow on a system's potential alone (in a worker process),
draw weighted samples, reweighted populations against exact or reference values, structures through the flow.

The library does the work (:mod:`latentlab.flows`): :class:`~latentlab.flows.FlowTrainer` with its callback
streamed as live events (stage, beta, ESS, loss), :func:`~latentlab.flows.flow_report` for the populations and
:class:`~latentlab.flows.FlowReconstructor` (the reconstructor interface shared with the nearest-frame one) for
all-atom structures of slow-latent states.  The trained flow travels back from the worker as the bytes of a
flow file (:func:`latentlab.flows.save_flow`, plain data).
"""

from __future__ import annotations

import os

import numpy as np
import param

from .common import JobState, message, models_directory

#: Systems the tab offers (the names of ``latentlab flow train``).
SYSTEMS = ["double-well", "gaussian-mixture", "alanine-dipeptide", "gaussian-mixture-20d"]


def flow_to_bytes(trained) -> bytes:
    """A trained flow as the bytes of a flow file."""
    import tempfile

    from latentlab.flows import save_flow

    with tempfile.TemporaryDirectory() as tmp:
        path = save_flow(os.path.join(tmp, "flow.pt"), trained)
        with open(path, "rb") as fh:
            return fh.read()


def flow_from_bytes(data: bytes):
    """The :class:`~latentlab.flows.TrainedFlow` of :func:`flow_to_bytes`."""
    import tempfile

    from latentlab.flows import load_flow

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flow.pt")
        with open(path, "wb") as fh:
            fh.write(data)
        return load_flow(path)


class _StageHistory(list):
    """The trainer's stage history, forwarding each new stage as a live event."""

    def __init__(self, emit):
        super().__init__()
        self.emit = emit

    def append(self, entry):
        super().append(entry)
        self.emit({"event": "stage", **entry})


def run_flow_training(payload: dict, ctx) -> dict:
    """Worker-process runner: train a flow (``payload``: system, slow_dims, settings overrides, seed, every).

    Events ``("flow", {"event": "step", ...})`` every ``every`` steps (step, stage, beta, loss, ess_fraction,
    seconds) and ``{"event": "stage", ...}`` after every stage; ``ctx.stopped`` stops the trainer within a
    step.  Returns the flow file's bytes (None when stopped before a stage ended), the stage history and
    whether training finished.
    """
    import torch

    from latentlab.flows import FlowTrainer, get_system, make_flow, train_settings, trained_from_trainer

    ctx.emit("flow", {"event": "message", "message": f"building {payload['system']}"})
    system = get_system(payload["system"])
    settings = train_settings(system, seed=int(payload.get("seed", 0)), **dict(payload.get("settings") or {}))
    torch.manual_seed(settings.seed)
    flow = make_flow(system, payload.get("slow_dims") or None)
    every = max(1, int(payload.get("every", 10)))

    def callback(info: dict) -> bool:
        if info["step"] % every == 0:
            ctx.emit("flow", {"event": "step", **info})
        return ctx.stopped

    trainer = FlowTrainer(flow, system, settings, callback=callback)
    trainer.history = _StageHistory(lambda entry: ctx.emit("flow", entry))
    ctx.emit("flow", {"event": "message", "message": "training"})
    state = trainer.fit()
    data = flow_to_bytes(trained_from_trainer(trainer)) if len(trainer.history) else None
    return {"flow": data, "history": [dict(h) for h in trainer.history], "finished": bool(state.finished),
            "steps": int(state.total_steps), "seconds": float(state.seconds)}


class FlowState(JobState):
    """A flow trained on a system's potential alone; its weighted samples, populations and structures.

    The training defaults are the system's (those of ``latentlab flow train SYSTEM``); ``initial_steps``,
    ``steps`` and ``batch`` of 0 keep them.
    """

    system = param.Selector(default="double-well", objects=SYSTEMS)
    slow_dims = param.Integer(default=0, bounds=(0, 64), doc="slow latent dimensions k (0: the system's)")
    initial_steps = param.Integer(default=0, bounds=(0, 10_000_000), doc="steps of the first stage (0: default)")
    steps = param.Integer(default=0, bounds=(0, 10_000_000), doc="steps per later stage (0: default)")
    batch = param.Integer(default=0, bounds=(0, 1 << 20), doc="samples per step (0: default)")
    tempering = param.Selector(default="adaptive", objects=["adaptive", "linear", "none"])
    seed = param.Integer(default=0)
    n_samples = param.Integer(default=20000, bounds=(100, 10_000_000), doc="samples drawn for the plots")

    running = param.Boolean(default=False, doc="queued or training")
    progress = param.List(default=[], doc="live points: step, stage, beta, loss, ess_fraction, seconds")
    history = param.List(default=[], doc="one dict per finished stage: stage, beta, steps, loss, ess_fraction")
    trained = param.Parameter(default=None, doc="the trained or loaded latentlab.flows.TrainedFlow")
    label = param.String(default="")
    samples = param.Parameter(default=None, doc="latentlab.flows.FlowSamples of the last draw")
    report = param.Dict(default=None, allow_None=True, doc="latentlab.flows.flow_report of those samples")
    path = param.String(default="", doc="flow file of this session")

    def __init__(self, session, **params):
        super().__init__(session, **params)
        self.path = os.path.join(models_directory(), f"latentlab-flow-{session.id}.pt")
        self._reconstructor = None

    def overrides(self) -> dict:
        """Settings of ``latentlab flow train`` that differ from the system's defaults."""
        out = {"tempering": self.tempering}
        for name in ("initial_steps", "steps", "batch"):
            if getattr(self, name):
                out[name] = int(getattr(self, name))
        return out

    # ------------------------------------------------------------------ training (a job)
    def start(self, blocking: bool = False) -> bool:
        """Queue a training run of a new flow on ``system``."""
        if self.running:
            return False
        self.param.update(running=True, progress=[], history=[], error="", status="queued")
        self.submit("flow-train", {"system": self.system, "slow_dims": self.slow_dims or None, "seed": self.seed,
                                   "settings": self.overrides(), "every": 10},
                    on_event=self.on_trainer_event, on_done=self._done)
        self.bump()
        if blocking:
            self.wait(timeout=3600)
        return True

    def trainer_event(self, what: str, event: dict) -> None:
        if what == "step":
            with self._lock:
                self.progress = self.progress + [dict(event)]
            self.status = (f"stage {event['stage']}, step {event['step']}: beta {event['beta']:.4g} (of 1/kT), "
                           f"ESS {event['ess_fraction']:.3f}, loss {event['loss']:.4g}")
        elif what == "stage" or "beta" in event:
            with self._lock:
                self.history = self.history + [dict(event)]

    def _done(self, job) -> None:
        self.finish(job, "flow training", self._flow_trained)

    def _flow_trained(self, r: dict) -> None:
        if r["flow"] is None:
            self.status = "stopped before the first stage ended"
            return
        trained = flow_from_bytes(r["flow"])
        done = "finished" if r["finished"] else "stopped"
        self._set_flow(trained, f"trained {trained.system.name} ({done}, {r['steps']} steps, {r['seconds']:.0f} s)")
        self.history = list(r["history"])
        self.status = f"{done} after {r['steps']} steps in {r['seconds']:.1f} s; drawing samples"
        self.draw()

    # ------------------------------------------------------------------ files
    def _set_flow(self, trained, label: str) -> None:
        self._reconstructor = None
        self.param.update(trained=trained, label=label, samples=None, report=None, error="")

    def load(self, path: str | None = None) -> bool:
        """Read a flow file (of ``latentlab flow train``) and draw samples from it."""
        from latentlab.flows import load_flow

        path = path or self.path
        try:
            trained = load_flow(path)
        except Exception as err:
            self.error = f"cannot load flow {path!r}: {message(err)}"
            return False
        self._set_flow(trained, f"loaded {os.path.basename(path)} ({trained.system.name})")
        self.status = f"loaded {path}"
        self.draw()
        self.bump()
        return True

    def save(self, path: str | None = None, overwrite: bool = False) -> bool:
        """Write the flow (default: this session's file); an existing file is refused unless ``overwrite``."""
        from latentlab.flows import save_flow

        if self.trained is None:
            self.error = "no flow to save: train or load one"
            return False
        return self.save_file(lambda target: save_flow(target, self.trained), "flow", path, overwrite)

    # ------------------------------------------------------------------ samples, populations, structures
    def draw(self, n: int | None = None, seed: int = 0) -> bool:
        """Draw weighted samples and the populations against exact (analytic) or reference (molecule) values."""
        from latentlab.flows import flow_report

        if self.trained is None:
            self.error = "no flow: train or load one"
            return False
        try:
            samples = self.trained.sample(int(n or self.n_samples), seed=seed)
            report = flow_report(self.trained, samples=samples)
        except Exception as err:
            self.error = f"cannot draw samples: {message(err)}"
            return False
        self.param.update(samples=samples, report=report, error="")
        self.bump()
        return True

    def physical(self) -> dict | None:
        """The samples in the system's own two coordinates, with weights, for the density plot.

        ``x`` and ``y`` (x1, x2 for the analytic systems; phi, psi in degrees for alanine dipeptide), ``w`` the
        normalised weights, ``names``; None without samples.
        """
        s = self.samples
        if s is None:
            return None
        system = self.trained.system
        if hasattr(system, "phi_atoms"):
            import torch

            from latentlab.flows.systems import _phi_psi

            phi, psi = _phi_psi(torch.as_tensor(s.positions), system.phi_atoms, system.psi_atoms)
            x, y, names = np.degrees(phi.numpy()), np.degrees(psi.numpy()), ["phi [deg]", "psi [deg]"]
        else:
            x, y, names = s.positions[:, 0, 0], s.positions[:, 0, 1], ["x1", "x2"]
        return {"x": np.asarray(x), "y": np.asarray(y), "w": s.weights, "names": names}

    def density(self, bins: int = 60) -> dict | None:
        """The exact (analytic 2-D systems) or reference (alanine dipeptide, built-in 300 K) density on a grid.

        ``x_edges``, ``y_edges``, ``p`` (bins x bins, normalised), ``kind`` ("exact" or "reference"); None when
        neither exists (the 20-D mixture).
        """
        if self.trained is None:
            return None
        system = self.trained.system
        name = system.name
        try:
            if hasattr(system, "phi_atoms"):
                import torch

                from latentlab.data import load
                from latentlab.flows.systems import _phi_psi

                ds = load("alanine-dipeptide")
                phi, psi = _phi_psi(torch.as_tensor(ds.positions, dtype=torch.float64), system.phi_atoms,
                                    system.psi_atoms)
                edges = np.linspace(-180, 180, bins + 1)
                h, xe, ye = np.histogram2d(np.degrees(phi.numpy()), np.degrees(psi.numpy()), bins=[edges, edges])
                return {"x_edges": xe, "y_edges": ye, "p": h / h.sum(), "kind": "reference"}
            if system.dim != 2:
                return None
            import torch

            pts = self.physical()
            lo = np.array([np.quantile(pts["x"], 0.001), np.quantile(pts["y"], 0.001)])
            hi = np.array([np.quantile(pts["x"], 0.999), np.quantile(pts["y"], 0.999)])
            pad = 0.1 * (hi - lo)
            xe, ye = np.linspace(lo[0] - pad[0], hi[0] + pad[0], bins + 1), np.linspace(lo[1] - pad[1], hi[1] + pad[1], bins + 1)
            xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
            gx, gy = np.meshgrid(xc, yc, indexing="ij")
            y = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))
            logp = -system.reduced_energy(y).detach().numpy()
            p = np.exp(logp - logp.max()).reshape(bins, bins)
            return {"x_edges": xe, "y_edges": ye, "p": p / p.sum(), "kind": "exact"}
        except Exception as err:
            self.error = f"no density for {name}: {message(err)}"
            return None

    def slow_histogram(self, bins: int = 60) -> dict | None:
        """Histograms of the first slow coordinate z0: the flow's own (unweighted) and reweighted, normalised."""
        s = self.samples
        if s is None:
            return None
        b = float(self.trained.flow.bound)
        edges = np.linspace(-b, b, bins + 1)
        raw, _ = np.histogram(s.slow[:, 0], edges, density=True)
        rew, _ = np.histogram(s.slow[:, 0], edges, weights=s.weights, density=True)
        return {"edges": edges, "flow": raw, "reweighted": rew}

    def populations_table(self) -> list[dict]:
        """One row per state: name, value, stderr, target (exact or reference), its kind, z."""
        rows = []
        for name, e in ((self.report or {}).get("populations") or {}).items():
            kind = "exact" if "exact" in e else ("reference" if "reference" in e else "")
            rows.append({"state": name, "value": e["value"], "stderr": e["stderr"],
                         "target": e.get(kind) if kind else None, "kind": kind, "z": e.get("z")})
        return rows

    def reconstructor(self):
        """The :class:`latentlab.flows.FlowReconstructor` of the current flow (built once per flow)."""
        from latentlab.flows import FlowReconstructor

        if self.trained is None:
            return None
        if self._reconstructor is None:
            self._reconstructor = FlowReconstructor(self.trained)
        return self._reconstructor

    def structure(self, Q, seed: int = 0) -> np.ndarray | None:
        """All-atom positions ``(n_atoms, 3)`` nm for the slow-latent state ``Q (k,)``, drawn through the flow."""
        try:
            r = self.reconstructor()
            if r is None:
                self.error = "no flow: train or load one"
                return None
            return r.reconstruct(np.asarray(Q, dtype=np.float64).reshape(1, -1), seed=seed)[0]
        except Exception as err:
            self.error = f"reconstruction failed: {message(err)}"
            return None

    def structure_pdb(self, Q, seed: int = 0) -> str | None:
        """PDB text of :meth:`structure` (for NGL)."""
        try:
            r = self.reconstructor()
            return None if r is None else r.pdb(np.asarray(Q, dtype=np.float64), seed=seed)
        except Exception as err:
            self.error = f"reconstruction failed: {message(err)}"
            return None


def flow_state(session) -> FlowState:
    """The session's :class:`FlowState` (made on first use: the Flow tab is independent of the data set)."""
    state = getattr(session, "flow", None)
    if state is None:
        state = FlowState(session)
        session.flow = state
    return state
