"""Latent Langevin simulation of the session's model in a worker process; live histograms, monitors, kinetics."""

from __future__ import annotations

import inspect

import numpy as np
import param

from .common import JobState, message


def _simulation_default(name: str):
    from latentlab.simulation import Simulation

    return inspect.signature(Simulation.__init__).parameters[name].default


def _histogram_default(name: str):
    from latentlab.simulation import HistogramReporter

    return inspect.signature(HistogramReporter.__init__).parameters[name].default


class SimulationState(JobState):
    """A :class:`latentlab.simulation.Simulation` run by a worker (:mod:`latentlab_app.live_simulation`).

    ``start()`` queues it (or resumes a paused one where it stopped), ``pause()`` stops it and keeps what
    the next start continues from, ``reset()`` forgets it.  When the queue gives the worker to a
    waiting session (the time slice of :class:`latentlab_app.jobs.JobQueue`), the simulation re-queues
    itself and continues when its turn comes.  Settings take effect at the next reset.  The defaults are
    the library's (``Simulation``: walkers, dt, seed; the model's temperature and calibrated or
    automatic friction; ``HistogramReporter``: steps between records).
    """

    n_walkers = param.Integer(default=_simulation_default("n_walkers"), bounds=(1, 1 << 20))
    dt = param.Number(default=_simulation_default("dt"), bounds=(1e-6, 1.0), doc="time step, ps")
    gamma = param.Number(default=None, allow_None=True, bounds=(0.0, None),
                         doc="friction, amu/ps or 1/ps for atomic friction (empty: the model's calibrated friction, "
                             "else automatic)")
    dynamics = param.Selector(default="model", objects=["model", "langevin", "brownian"],
                              doc="latent Langevin or its overdamped limit ('model': the model's, set by calibration)")
    friction_model = param.Selector(default="model", objects=["model", "coordinate", "atomic"],
                                    doc="friction -gamma dQ/dt or one collision rate on every atom ('model': the model's)")
    temperature = param.Number(default=None, allow_None=True, bounds=(1.0, 5000.0),
                               doc="K (empty: the model's temperature)")
    steps_per_record = param.Integer(default=_histogram_default("every"), bounds=(1, 10000),
                                     doc="steps between histogram/plot records")
    seed = param.Integer(default=_simulation_default("seed"))
    kinetics_every = param.Number(default=5.0, bounds=(0.5, None), doc="seconds between live kinetics analyses")
    after_training = param.Boolean(default=True, label="Simulate when training finishes",
                                   doc="start simulating as soon as a training run finishes")

    running = param.Boolean(default=False, doc="queued or running")

    def __init__(self, session, **params):
        super().__init__(session, **params)
        self.setup: dict | None = None  # names, edges, reference densities of the running simulation
        self.latest: dict | None = None  # the last snapshot
        self.resume: dict | None = None  # where a paused simulation continues
        self._layout_key = None
        self._layout: dict | None = None

    @property
    def kinetics(self):
        return self.session.kinetics

    # ------------------------------------------------------------------ control
    def start(self, blocking: bool = False) -> bool:
        """Queue the simulation (a paused one continues where it stopped)."""
        from latentlab_app.worker import model_to_bytes

        model = self.session.train.model
        if self.cannot_start(None if model is not None else
                             "no model: train one, load one, or use the exact PMF (analytic systems)"):
            return False
        try:
            payload = {"source": self.session.data.load_source, "model": model_to_bytes(model),
                       "settings": self.settings(), "resume": self.resume,
                       "kinetics_reference": self.kinetics.reference_for_worker()}
        except Exception as err:
            self.error = f"cannot start the simulation: {message(err)}"
            return False
        self.param.update(running=True, error="", status="queued")
        self.submit("simulate", payload, on_event=self._event, on_done=self._done, preemptible=True)
        self.bump()
        if blocking:
            self.wait()
        return True

    def settings(self) -> dict:
        return {"n_walkers": self.n_walkers, "dt": self.dt, "gamma": self.gamma, "temperature": self.temperature,
                "dynamics": None if self.dynamics == "model" else self.dynamics,
                "friction_model": None if self.friction_model == "model" else self.friction_model,
                "steps_per_record": self.steps_per_record, "seed": self.seed, "kinetics_every": self.kinetics_every}

    def pause(self, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop after the current record (well within a second); ``start()`` continues from there."""
        job = self.job
        if job is not None and job.active:
            job.stop()
            if wait:
                self.wait(timeout)

    def reset(self, wait: bool = True) -> None:
        """Stop and forget the simulation (new settings or a new model take effect)."""
        self.pause(wait=wait)
        self.job = None  # whatever the stopped run still sends is ignored
        self.resume = self.setup = self.latest = None
        self.kinetics.clear_model()
        self.param.update(status="reset", error="", running=False)
        self.bump()

    # ------------------------------------------------------------------ job callbacks (queue's thread)
    def _event(self, job, kind, data) -> None:
        if job is not self.job:  # a run that was reset meanwhile
            return
        if kind == "setup":
            self.setup = data
            self.status = "running"
        elif kind == "snapshot":
            self.latest = data
            self.status = "running"
        elif kind in ("kinetics", "kinetics-reference"):
            self.kinetics.receive(kind, data)
        self.bump()

    def _done(self, job) -> None:
        if job is not self.job:
            return
        if job.state == "failed":
            self.param.update(error=f"simulation stopped: {job.error}", status="failed", running=False)
        elif job.result is not None:
            self.resume = job.result["resume"]
            problems = job.result.get("problems") or []
            if job.preempted:  # the worker went to a waiting session: queue again, continue later
                self.running = False
                self.start()
                self.status = "queued again (another session's turn)"
                return
            self.param.update(status="paused", running=False, error="; ".join(problems))
        else:
            self.param.update(status="paused" if job.state != "cancelled" else "cancelled", running=False)
        self.bump()

    # ------------------------------------------------------------------ what the views draw
    def _reference_layout(self) -> dict | None:
        """Names, bins and reference densities before the worker has sent its own (same library calls)."""
        from latentlab.compare import marginal_edges
        from latentlab.reconstruct import latent_coordinates
        from latentlab.simulation import HistogramReporter

        model = self.session.train.model
        ds = self.session.data.dataset
        key = (self.session.data.version, self.session.map.version, id(model))
        if key != self._layout_key:
            try:
                cg_map = model.cg_map(ds) if model is not None else self.session.map.cg_map
                ref = latent_coordinates(cg_map, ds.positions)
                edges = marginal_edges(ref, cg_map.periodic, cg_map.bounds)
                hist = HistogramReporter(ref, edges, cg_map.periodic, names=cg_map.names)
                self._layout = {"names": list(cg_map.names), "edges": [e.tolist() for e in edges],
                                "reference": [d.tolist() for d in hist.reference_density], "empty": hist.snapshot()}
            except Exception as err:
                self.error = f"reference histograms: {message(err)}"
                self._layout = None
            self._layout_key = key
        return self._layout

    def snapshot(self) -> dict | None:
        """A consistent copy of everything the views draw (kinetic temperature in K), or None without a map."""
        setup = self.setup or self._reference_layout()
        if setup is None:
            return None
        latest = self.latest
        if latest is None:
            latest = dict((self._layout or {}).get("empty") or {})
            for key in ("names", "edges", "reference"):
                latest.pop(key, None)
            latest.setdefault("model", [np.zeros(len(e) - 1) for e in setup["edges"]])
        target = self.temperature or self._model_temperature()
        kin = np.asarray(latest.get("kinetic", np.zeros((0, 2))), dtype=float).reshape(-1, 2)
        return {**latest, "names": setup["names"], "edges": setup["edges"], "reference": setup["reference"],
                "kinetic": kin * np.array([1.0, target]), "target_temperature": target, "running": self.running,
                "version": self.version, "problems": latest.get("problems", [])}

    def _model_temperature(self) -> float:
        model = self.session.train.model
        return float(model.temperature) if model is not None else float(self.session.data.dataset.temperature)

    @property
    def last_Q(self):
        return None if self.latest is None else self.latest.get("last_Q")

    @property
    def traces(self) -> list:
        """``[(time, Q of the traced walkers (k, n_cg)), ...]`` of the latest snapshot."""
        if self.latest is None or self.latest.get("traces") is None:
            return []
        return list(zip(self.latest["trace_time"], self.latest["traces"]))
