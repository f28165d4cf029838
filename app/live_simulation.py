"""The dashboard's simulation job (runs in a worker process, see :mod:`latentlab_app.worker`).

One :class:`latentlab.simulation.Simulation` of the session's model, with the library's reporters:

* a :class:`~latentlab.simulation.HistogramReporter` on the bins of the reference (the data set
  mapped with the model's own map; :func:`latentlab.compare.marginal_edges`), which also keeps the
  JS divergence against its noise floor, the kinetic temperature and a few walkers' traces;
* :class:`latentlab_app.live_kinetics.LiveKinetics` for the Kinetics view;
* a :class:`~latentlab.simulation.CallbackReporter` that sends a snapshot to the server at most every
  :data:`SNAPSHOT_EVERY` seconds and ends the run when the server asks (Pause, Reset, a closed
  session, or the queue giving the worker to a waiting session).

A stopped run returns what the next run needs to continue where this one stopped (positions,
momenta, step, histograms, kinetics record): pausing ends the worker process (its memory is
returned) and resuming starts a new one.

Events: ``setup`` (names, bin edges, reference densities, friction), ``snapshot`` (the
HistogramReporter's snapshot without the static parts, plus the walkers' current Q and the run's
problems), ``kinetics-reference`` (once), ``kinetics`` (every ``kinetics_every`` s).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from latentlab_app.live_kinetics import LiveKinetics, reference_kinetics, reference_trajectories
from latentlab_app.worker import load_dataset, model_from_bytes

#: Seconds between two snapshots sent to the server.
SNAPSHOT_EVERY = 0.1
#: Seconds between two checks of the run's health (re-seeds, kinetic temperature).
PROBLEMS_EVERY = 2.0


def run(payload: dict, ctx) -> dict:
    """Simulate until stopped; returns ``{"resume": ..., "summary": ..., "problems": [...]}``."""
    from latentlab.compare import marginal_edges
    from latentlab.reconstruct import latent_coordinates
    from latentlab.simulation import CallbackReporter, HistogramReporter, Simulation

    s = payload["settings"]
    resume = payload.get("resume")
    ds = load_dataset(payload["source"])
    model = model_from_bytes(payload["model"])
    cg_map = model.cg_map(ds)
    reference = latent_coordinates(cg_map, ds.positions)  # (F, N)
    edges = marginal_edges(reference, cg_map.periodic, cg_map.bounds)
    segment = 0 if resume is None else int(resume["segment"])
    dynamics = s if resume is None else resume  # a resumed run keeps the friction and dynamics it ran with
    sim = Simulation(model, n_walkers=s["n_walkers"], dt=s["dt"], temperature=s["temperature"],
                     gamma=dynamics["gamma"], seed=int(s.get("seed", 0)) + segment,
                     start="data" if resume is None else resume["Q"], dynamics=dynamics.get("dynamics"),
                     friction_model=dynamics.get("friction_model"))
    hist = HistogramReporter(reference, edges, cg_map.periodic, every=s["steps_per_record"], names=cg_map.names)
    ref_tr, ref_error = reference_trajectories(ds, cg_map)
    kin = LiveKinetics(sim.dt, cg_map.names, cg_map.periodic, cg_map.units, None if ref_tr is None else ref_tr.dt_ps)
    if resume is not None:
        _restore(sim, hist, kin, resume)
    ctx.emit("setup", {"names": list(cg_map.names), "units": list(cg_map.units), "edges": [e.tolist() for e in edges],
                       "reference": [d.tolist() for d in hist.reference_density], "gamma": sim.gamma,
                       "dynamics": sim.dynamics, "friction_model": sim.integrator.friction_model,
                       "record_every_ps": kin.spacing_ps})
    background = _reference_kinetics(payload.get("kinetics_reference"), ref_tr, ref_error, kin, ctx)
    loop = _Loop(ctx, sim, hist, kin, float(s.get("kinetics_every", 5.0)))
    sim.reporters = [hist, kin, CallbackReporter(loop.on_record, every=s["steps_per_record"])]
    sim.run(10**12)  # until the server asks it to stop
    loop.send_snapshot()
    loop.send_kinetics()
    if background is not None:
        background.join(0.5)
    return {"resume": _state(sim, hist, kin, segment + 1), "summary": sim.summary(), "problems": sim.problems()}


def _reference_kinetics(known, ref_tr, ref_error, kin: LiveKinetics, ctx):
    """Use the reference analysis the server already has, or compute it in a thread (seconds) and send it."""
    if known is not None:
        kin.reference = known
        return None
    if ref_tr is None:
        kin.reference = {"error": ref_error, "dt_ps": None}
        ctx.emit("kinetics-reference", kin.reference)
        return None

    def work():
        result = reference_kinetics(ref_tr)
        kin.reference = result
        ctx.emit("kinetics-reference", result)

    thread = threading.Thread(target=work, daemon=True, name="latentlab-reference-kinetics")
    thread.start()
    return thread


class _Loop:
    """The CallbackReporter's function: snapshots, health checks, kinetics, stop requests."""

    def __init__(self, ctx, sim, hist, kin, kinetics_every: float):
        self.ctx, self.sim, self.hist, self.kin = ctx, sim, hist, kin
        self.kinetics_every = kinetics_every
        self.last_snapshot = self.last_problems = self.last_kinetics = 0.0
        self.problems: list[str] = []

    def on_record(self, sim) -> bool:
        now = time.monotonic()
        if now - self.last_snapshot >= SNAPSHOT_EVERY:
            self.send_snapshot()
        if now - self.last_kinetics >= self.kinetics_every:
            self.send_kinetics()
        return self.ctx.stopped

    def send_snapshot(self) -> None:
        now = time.monotonic()
        if now - self.last_problems >= PROBLEMS_EVERY:
            self.problems = self.sim.problems()
            self.last_problems = now
        snap = self.hist.snapshot()
        for key in ("edges", "reference", "names"):
            snap.pop(key, None)
        snap["last_Q"] = None if self.hist.last_Q is None else np.array(self.hist.last_Q)
        snap["problems"] = list(self.sim.notes) + list(self.problems)  # notes (e.g. a temperature V does not hold at) first
        snap["kinetic_temperature_ratio"] = self.sim.kinetic_temperature_ratio()
        self.ctx.emit("snapshot", snap)
        self.last_snapshot = time.monotonic()

    def send_kinetics(self) -> None:
        self.last_kinetics = time.monotonic()
        try:
            result = self.kin.analyse()
        except (ValueError, ImportError) as err:
            result = {"error": str(err).strip().splitlines()[0]}
        if result is not None:
            self.ctx.emit("kinetics", result)
        self.last_kinetics = time.monotonic()


# ---------------------------------------------------------------------------- pause and resume
_HISTOGRAM_FIELDS = ("n_samples", "records", "js_latest", "time", "reseeded")
_HISTOGRAM_DEQUES = ("samples", "traces", "kinetic", "js")


def _state(sim, hist, kin: LiveKinetics, segment: int) -> dict:
    """What the next run needs to continue this one."""
    st = sim.state
    return {"Q": st.Q.detach().cpu().numpy(), "P": st.P.detach().cpu().numpy(), "step": int(st.step),
            "counters": dict(st.counters), "gamma": float(sim.gamma), "segment": segment, "dynamics": sim.dynamics,
            "friction_model": sim.integrator.friction_model,
            "histograms": {"counts": [c.copy() for c in hist.counts],
                           **{k: getattr(hist, k) for k in _HISTOGRAM_FIELDS},
                           **{k: list(getattr(hist, k)) for k in _HISTOGRAM_DEQUES}},
            "kinetics": kin.state_dict()}


def _restore(sim, hist, kin: LiveKinetics, state: dict) -> None:
    """Continue a stopped run: same walkers and momenta, same step count, histograms and records so far."""
    import torch

    st = sim.state
    st.P = torch.as_tensor(state["P"], dtype=st.Q.dtype, device=st.Q.device)
    st.step = int(state["step"])
    st.counters.update(state["counters"])
    h = state["histograms"]
    hist.counts = [np.asarray(c, dtype=float).copy() for c in h["counts"]]
    for key in _HISTOGRAM_FIELDS:
        setattr(hist, key, h[key])
    for key in _HISTOGRAM_DEQUES:
        old = getattr(hist, key)
        setattr(hist, key, deque(h[key], maxlen=old.maxlen))
    kin.load_state_dict(state["kinetics"])
