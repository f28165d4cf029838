"""What runs inside a dashboard worker process (:mod:`latentlab_app.jobs`): one job, then the process ends.

A job is ``(kind, payload)``; :data:`RUNNERS` maps each kind to a function ``runner(payload, ctx)``
that calls the library and returns a picklable result.  ``ctx.emit(kind, data)`` streams live
updates to the server; ``ctx.stopped`` turns True when the server asks the job to stop (every runner
polls it at least every batch or record).

Kinds:

* ``train``: force matching with :class:`latentlab.training.Trainer`; events are the trainer's own
  (``message``, ``batch``, ``epoch``); returns the model, its history and the parity data
  (:func:`latentlab.training.force_matching.force_parity`).
* ``simulate``: a :class:`latentlab.simulation.Simulation` with a
  :class:`~latentlab.simulation.HistogramReporter` on the reference's bins, snapshots a few times a
  second, and the live kinetics (:mod:`latentlab_app.live_kinetics`); returns what a paused
  simulation needs to resume.
* ``calibrate``: friction calibration (:func:`latentlab.kinetics.calibrate`) against the data set; returns
  the result and the model with the calibrated friction.
* ``consistency``: :func:`latentlab.consistency.check_consistency` and
  :func:`~latentlab.consistency.closed_form_check` on the data set.
* ``probe``: the queue's self-test (start-up time, stop, crash), used by the tests and the benchmark.

Models travel as ``torch.save`` bytes of :meth:`latentlab.model.CGModel.to_payload` (plain data,
read back with ``weights_only=True``), never as pickled tensors, whose shared-memory handles would
not survive the worker's exit.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
import traceback

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported: one core per job

import numpy as np  # noqa: E402
import torch  # noqa: E402

# Everything a job imports is imported here, once, by the fork server: a job then starts in milliseconds.
import scipy.stats  # noqa: E402,F401  (JS divergence's Wasserstein distances)
import latentlab.compare  # noqa: E402,F401
import latentlab.consistency  # noqa: E402,F401
import latentlab.data  # noqa: E402,F401
import latentlab.kinetics  # noqa: E402,F401
import latentlab.model  # noqa: E402,F401
import latentlab.reconstruct  # noqa: E402,F401
import latentlab.simulation  # noqa: E402,F401
import latentlab.training.force_matching  # noqa: E402,F401
import latentlab.training.trainer  # noqa: E402,F401

try:  # the kinetics estimators (optional dependency of latentlab.kinetics)
    import deeptime.markov  # noqa: E402,F401
except ImportError:
    pass

#: Frames the consistency check uses at most (as ``latentlab consistency --frames``).
CONSISTENCY_FRAMES = 20000


def message(err: BaseException) -> str:
    """One readable line (or a short paragraph) for an exception."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0] if len(text) > 400 else text


# ---------------------------------------------------------------------------- models and maps
def model_to_bytes(model) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.to_payload(), buffer)
    return buffer.getvalue()


def model_from_bytes(data: bytes):
    from latentlab.model import CGModel

    return CGModel.from_payload(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), "model")


def map_info(cg_map) -> dict:
    """What a worker needs to rebuild ``cg_map`` exactly: its stored definition, or its spec."""
    return {"spec": cg_map.spec, "definition": cg_map.to_dict()}


def build_map(dataset, info: dict):
    from latentlab.maps.spec import map_from_dict

    if info.get("definition") is not None:
        return map_from_dict(info["definition"])
    return dataset.map(info["spec"])


def load_dataset(source: str):
    from latentlab.data import load

    return load(source)


# ---------------------------------------------------------------------------- the process
class JobContext:
    """The worker's side of a job: send events, see stop requests."""

    def __init__(self, conn, stop_event):
        self.conn, self.stop_event = conn, stop_event
        self._lock = threading.Lock()  # a job may emit from a helper thread too

    @property
    def stopped(self) -> bool:
        return self.stop_event.is_set()

    def emit(self, kind: str, data=None) -> None:
        with self._lock:
            self.conn.send(("event", kind, data))


def child_main(conn, stop_event) -> None:
    """Entry point of a worker process: receive one job, run it, send the result, end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the server's to handle
    torch.set_num_threads(1)
    try:
        kind, payload = conn.recv()
    except (EOFError, OSError):
        return
    ctx = JobContext(conn, stop_event)
    try:
        runner = RUNNERS.get(kind)
        if runner is None:
            raise ValueError(f"unknown job kind {kind!r}")
        result = runner(payload, ctx)
        with ctx._lock:
            conn.send(("done", result))
    except Exception as err:
        try:
            conn.send(("error", message(err), traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        conn.close()


# ---------------------------------------------------------------------------- runners
def run_probe(payload: dict, ctx: JobContext) -> dict:
    """Sleep in small steps, emitting ``tick`` events; optionally crash or ignore stop requests."""
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < float(payload.get("seconds", 0.0)):
        if ctx.stopped and not payload.get("ignore_stop"):
            break
        if payload.get("crash") and time.monotonic() - t0 > float(payload.get("crash_after", 0.0)):
            os._exit(3)
        if payload.get("fail"):
            raise ValueError(str(payload["fail"]))
        ctx.emit("tick", {"n": n, "pid": os.getpid()})
        n += 1
        time.sleep(float(payload.get("interval", 0.05)))
    if payload.get("allocate_mb"):
        block = np.ones(int(payload["allocate_mb"]) * 131072)  # 8 bytes each
        n += int(block[0])
    return {"ticks": n, "pid": os.getpid(), "owner": payload.get("owner"), "forward_ad": _forward_ad_probe()}


def _forward_ad_probe() -> bool:
    """A forward-mode AD computation (what broke threads in one process): True when it worked."""
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        x = fwAD.make_dual(torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
        tangent = fwAD.unpack_dual(torch.sin(x)).tangent
    return bool(torch.allclose(tangent, torch.cos(torch.ones(3, dtype=torch.float64))))


def run_training(payload: dict, ctx: JobContext) -> dict:
    """Force matching on the data set and map of the payload (``settings``: Trainer arguments + convention)."""
    from latentlab.training import ForceMatching, Trainer
    from latentlab.training.force_matching import force_parity

    ctx.emit("train", {"event": "message", "message": "loading the data set"})
    ds = load_dataset(payload["source"])
    cg_map = build_map(ds, payload["map"])
    settings = dict(payload["settings"])
    objective = ForceMatching(convention=settings.pop("convention"))
    trainer = Trainer(objective, callback=lambda event: ctx.emit("train", event) or ctx.stopped, **settings)
    model = trainer.fit(ds, cg_map)
    res = trainer.result_
    out = {"history": list(res.history), "stopped": res.stopped, "best_val_loss": res.best_val_loss,
           "seconds": res.seconds, "model": None, "parity": None}
    if model is not None:
        out["model"] = model_to_bytes(model)
        ctx.emit("train", {"event": "message", "message": "parity of the mean forces"})
        parity = force_parity(model, ds)
        out["parity"] = {k: np.asarray(v, dtype=np.float32) for k, v in parity.items()}
    return out


def run_consistency(payload: dict, ctx: JobContext) -> dict:
    """Consistency score, spread map and closed form vs numeric A (library defaults)."""
    from latentlab.consistency import check_consistency, closed_form_check

    ds = load_dataset(payload["source"])
    cg_map = build_map(ds, payload["map"])
    if ds.n_frames > CONSISTENCY_FRAMES:
        ds = ds.select_frames(np.linspace(0, ds.n_frames - 1, CONSISTENCY_FRAMES).astype(int))
    rep = check_consistency(cg_map, ds.positions, ds.masses)
    spread = {"edges": [np.asarray(e).tolist() for e in rep.bin_edges],
              "values": None if rep.bin_spread is None else np.asarray(rep.bin_spread, dtype=float).tolist(),
              "names": list(cg_map.names[:2])}
    closed = closed_form_check(cg_map, ds.positions, ds.masses)
    return {"report": rep.to_dict(), "spread": spread, "closed_form": closed}


def run_calibration(payload: dict, ctx: JobContext) -> dict:
    """The friction at which the model's ``target`` observable matches the data set's (library defaults otherwise)."""
    from latentlab.kinetics import CalibrationCancelled, calibrate

    from .live_kinetics import reference_trajectories

    ds = load_dataset(payload["source"])
    model = model_from_bytes(payload["model"])
    reference, why = reference_trajectories(ds, model.cg_map(ds))
    if reference is None:
        raise ValueError(why)
    last = [0.0]

    def callback(event: dict) -> bool:
        now = time.monotonic()
        if event.get("event") == "evaluation" or now - last[0] > 0.5:  # progress events throttled
            last[0] = now
            ctx.emit("calibrate", event)
        return ctx.stopped

    try:
        result = calibrate(model, reference, payload["target"], dt=payload["dt"], seed=payload.get("seed", 0),
                           callback=callback, dynamics=payload.get("dynamics"),
                           friction_model=payload.get("friction_model"))
    except CalibrationCancelled:
        return {"result": None, "model": None}
    calibrated = result.apply(model) if result.converged else None
    return {"result": result.to_dict(), "model": None if calibrated is None else model_to_bytes(calibrated)}


def run_simulation(payload: dict, ctx: JobContext) -> dict:
    """See :mod:`latentlab_app.live_simulation`."""
    from latentlab_app.live_simulation import run

    return run(payload, ctx)


def run_flow_training(payload: dict, ctx: JobContext) -> dict:
    """See :func:`latentlab_app.state.flow.run_flow_training`."""
    from latentlab_app.state.flow import run_flow_training as run

    return run(payload, ctx)


RUNNERS = {"probe": run_probe, "train": run_training, "simulate": run_simulation, "consistency": run_consistency,
           "calibrate": run_calibration, "flow-train": run_flow_training}
