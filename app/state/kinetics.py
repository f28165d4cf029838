"""The Kinetics view's state: the reference's kinetics (analysed once per data set and map), the model's, live,
and friction calibration.

Both analyses come from the simulation's worker (:mod:`latentlab_app.live_kinetics`, on
:mod:`latentlab.kinetics`).  The reference's analysis takes seconds; it is kept per data set and map
for every session of the server (:data:`REFERENCE_CACHE`) and handed to later simulations, so it is
done once.  Calibration (:func:`latentlab.kinetics.calibrate`) is a job of its own (minutes: a dozen
short simulations); the calibrated model replaces the session's model, so the next simulation runs
with the calibrated friction.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import param

from latentlab.units import FRICTION_UNITS

from .common import JobState

#: Reference analyses of this server, by (data file, map): at most :data:`CACHE_SIZE`.
REFERENCE_CACHE: "OrderedDict[tuple, dict]" = OrderedDict()
CACHE_SIZE = 8
_cache_lock = threading.Lock()


def calibrate_function():
    """``latentlab.kinetics.calibrate`` (friction calibration, issue 12) when this latentlab has it, else None."""
    try:
        import latentlab.kinetics as kinetics
    except ImportError:
        return None
    return getattr(kinetics, "calibrate", None)


class KineticsState(JobState):
    """Reference and model kinetics for the Simulate tab's Kinetics view; friction calibration."""

    reference = param.Dict(default=None, allow_None=True, doc="reference analysis (summary, or error)")
    model = param.Dict(default=None, allow_None=True, doc="the model's latest live analysis")
    target = param.Selector(default="slowest-timescale", objects=["slowest-timescale", "mfpt", "acf"],
                            doc="what calibration matches (latentlab.kinetics.calibrate)")
    dynamics = param.Selector(default="langevin", objects=["langevin", "brownian"],
                              doc="dynamics calibrated: latent Langevin or its overdamped limit (docs/theory.md section 4)")
    friction_model = param.Selector(default="coordinate", objects=["coordinate", "atomic"],
                                    doc="friction -gamma dQ/dt (amu/ps) or one collision rate on every atom (1/ps)")
    calibrating = param.Boolean(default=False)
    calibration = param.Dict(default=None, allow_None=True, doc="CalibrationResult.to_dict() of the last run")
    evaluations = param.List(default=[], doc="the running calibration's simulations so far")

    def __init__(self, session, **params):
        super().__init__(session, **params)
        self._reference_full: dict | None = None

    def key(self):
        """(data file, the model's map) the analyses belong to, or None without a model."""
        model = self.session.train.model
        if model is None:
            return None
        definition = json.dumps(model.map_definition, sort_keys=True, default=str)
        return (self.session.data.load_source, model.map_spec, definition)

    def reference_for_worker(self) -> dict | None:
        """The cached reference analysis of the current data set and model map (None: the worker computes it)."""
        key = self.key()
        with _cache_lock:
            full = REFERENCE_CACHE.get(key)
        if full is not None:
            self._show_reference(full)
        return full

    def receive(self, kind: str, data: dict) -> None:
        """An event of the simulation job (queue's thread)."""
        if kind == "kinetics-reference":
            if "error" not in data:
                with _cache_lock:
                    REFERENCE_CACHE[self.key()] = data
                    while len(REFERENCE_CACHE) > CACHE_SIZE:
                        REFERENCE_CACHE.popitem(last=False)
            self._show_reference(data)
        elif kind == "kinetics":
            self.model = data
        self.version += 1

    def _show_reference(self, full: dict) -> None:
        self._reference_full = full
        self.reference = {"error": full["error"]} if "error" in full else dict(full["summary"])
        self.version += 1

    def clear_model(self) -> None:
        self.model = None
        self.version += 1

    def clear(self) -> None:
        """A new model: its analyses start afresh, and a calibration of the previous model is stopped."""
        if self.calibrating:
            self.detach()
            self.param.update(calibrating=False, status="calibration stopped: the model changed")
        self.reference = self.model = None
        self.version += 1

    # ------------------------------------------------------------------ calibration
    @staticmethod
    def available() -> bool:
        return calibrate_function() is not None

    def calibrate(self, blocking: bool = False) -> bool:
        """Queue a friction calibration of the session's model against its data set."""
        from latentlab_app.worker import model_to_bytes

        model = self.session.train.model
        if self.calibrating:
            return False
        if not self.available():
            self.error = "friction calibration is not in this version of latentlab"
            return False
        if model is None:
            self.error = "no model to calibrate: train one or load one"
            return False
        sim = self.session.simulation
        self.param.update(calibrating=True, error="", status="calibration queued", evaluations=[])
        self.submit("calibrate", {"source": self.session.data.load_source, "model": model_to_bytes(model),
                                  "target": self.target, "dt": sim.dt, "seed": sim.seed, "dynamics": self.dynamics,
                                  "friction_model": self.friction_model},
                    on_event=self._calibration_event, on_done=self._calibration_done)
        if blocking:
            self.wait(3600)
        return True

    def stop_calibration(self) -> None:
        if self.job is not None and self.job.kind == "calibrate" and self.job.active:
            self.job.stop()

    def _calibration_event(self, job, kind, event) -> None:
        if job is not self.job:
            return
        units = FRICTION_UNITS[self.friction_model]
        if event.get("event") == "evaluation":
            self.evaluations = self.evaluations + [event]
            self.status = (f"calibrating: {len(self.evaluations)} simulations; last gamma {event['gamma']:.4g} {units}, "
                           f"ln(model/reference) {event['f']:+.3f} ± {event['sigma_f']:.3f}")
        elif event.get("event") == "progress":
            self.status = (f"calibrating: simulation {len(self.evaluations) + 1} at gamma {event['gamma']:.4g} {units}, "
                           f"step {event['step']}")

    def _calibration_done(self, job) -> None:
        self.finish(job, "calibration", self._calibrated, flag="calibrating", failed_status="",
                    stopped="calibration stopped")

    def _calibrated(self, r: dict) -> None:
        from latentlab_app.worker import model_from_bytes

        result = r["result"]
        if result is None:
            self.status = "calibration stopped"
            return
        self.calibration = result
        if r["model"] is not None:
            train = self.session.train
            model = model_from_bytes(r["model"])
            units = FRICTION_UNITS[model.friction_model]
            train.param.update(model=model, model_label=f"{train.model_label} + calibrated friction "
                                                        f"{model.friction:.4g} {units} ({model.dynamics})")
            self.status = (f"calibrated: gamma = {result['gamma']:.4g} {units}, {model.dynamics} dynamics, "
                           f"{model.friction_model} friction (used by the next simulation)")
        else:
            self.status = f"no friction fits: {result.get('message')}"

    # ------------------------------------------------------------------ tables
    def mfpt_rows(self) -> list[dict]:
        """One row per basin pair: reference and model MFPT (ps) with standard errors and transition counts."""
        ref, mod = self.reference or {}, self.model or {}
        pairs = list((ref.get("mfpt_ps") or {}).keys()) or list((mod.get("mfpt_ps") or {}).keys())
        rows = []
        for pair in pairs:
            get = lambda d, key: (d.get(key) or {}).get(pair)  # noqa: E731
            r, m = get(ref, "mfpt_ps"), get(mod, "mfpt_ps")
            rows.append({"pair": pair, "reference_ps": r, "reference_stderr_ps": get(ref, "mfpt_stderr_ps"),
                         "reference_transitions": get(ref, "mfpt_transitions"), "model_ps": m,
                         "model_stderr_ps": get(mod, "mfpt_stderr_ps"), "model_transitions": get(mod, "mfpt_transitions"),
                         "ratio": None if not r or m is None else m / r})
        return rows

    def tau_rows(self) -> list[dict]:
        """One row per coordinate: integrated autocorrelation time of reference and model (ps)."""
        ref, mod = self.reference or {}, self.model or {}
        names = list((ref.get("tau_int_ps") or {}).keys()) or list((mod.get("tau_int_ps") or {}).keys())
        rows = []
        for name in names:
            r, m = (ref.get("tau_int_ps") or {}).get(name), (mod.get("tau_int_ps") or {}).get(name)
            rows.append({"coordinate": name, "reference_ps": r, "model_ps": m,
                         "ratio": None if not r or m is None else m / r})
        return rows
