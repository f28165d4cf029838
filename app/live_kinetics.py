"""Live kinetics of a running simulation next to the reference's (runs in the simulation's worker process).

Everything computed here comes from :mod:`latentlab.kinetics` (``Trajectories``, ``analyze``); this
module only decides what to record and when to analyse, so that the model's numbers are comparable
with the reference's:

* the reference data set is analysed once with the library's defaults (ACFs and tau_int, MSM with
  implied timescales and Bayesian intervals, direct MFPTs between its built-in basins);
* the first ``walkers`` walkers are recorded every few steps, at a spacing that divides the
  reference's frame spacing (so the reference's lag times are whole numbers of model frames);
* every ``every`` seconds the recorded walkers are analysed on the reference's MSM states, lag times
  and basins; tau_int and the MFPTs are taken at the reference's frame spacing (first passages and
  tau_int depend on it) once the model's trajectories are long enough for that, else at the model's
  spacing, which the result says.

The record is bounded (``max_frames``, records x walkers): when it is full, the spacing grows to the
reference's frame spacing, then fewer walkers are kept (longer trajectories at that spacing); the kept
records always stay evenly spaced.
"""

from __future__ import annotations

import math
import time

import numpy as np

#: Points per curve sent for plotting (the ACFs are thinned on a logarithmic grid of lags).
MAX_CURVE_POINTS = 300


def record_interval(dt_ps: float, reference_dt_ps: float | None, target_ps: float = 0.1) -> int:
    """Steps between records: about ``target_ps``, and a divisor of the reference's frame spacing when there is one."""
    target = max(1, int(round(target_ps / dt_ps)))
    if not reference_dt_ps:
        return target
    per_frame = reference_dt_ps / dt_ps
    n = int(round(per_frame))
    if n < 1 or abs(per_frame - n) > 1e-6 * per_frame:
        return target
    return max(k for k in range(1, min(n, target) + 1) if n % k == 0)


def thin_curves(curves: dict, max_points: int = MAX_CURVE_POINTS) -> dict:
    """``{"lags_ps": [...], name: [...]}`` on at most ``max_points`` logarithmically spaced lags (lag 0 kept)."""
    lags = np.asarray(curves.get("lags_ps") or [], dtype=float)
    n = len(lags)
    if n <= max_points:
        return {k: list(v) for k, v in curves.items()}
    idx = np.unique(np.concatenate([[0], np.round(np.geomspace(1, n - 1, max_points - 1)).astype(int)]))
    return {k: [v[i] for i in idx] for k, v in curves.items()}


def _summary(d: dict) -> dict:
    """The parts of :meth:`latentlab.kinetics.KineticsResult.to_dict` the dashboard shows."""
    keys = ("dt_ps", "n_frames", "n_trajectories", "total_time_ps", "lag_ps", "implied_timescales_ps",
            "implied_timescales_interval_ps", "tau_int_ps", "tau_int_stderr_ps", "mfpt_ps", "mfpt_stderr_ps",
            "mfpt_transitions", "basin_set", "basins", "basin_populations", "its", "warnings", "seconds")
    out = {k: d.get(k) for k in keys}
    out["acf"] = thin_curves(d["acf"]) if d.get("acf") else None
    return out


def reference_trajectories(dataset, cg_map):
    """The reference as independent trajectories in Q, or the reason it has none (e.g. no time axis)."""
    from latentlab.kinetics import Trajectories

    try:
        return Trajectories.from_dataset(dataset, cg_map=cg_map), None
    except ValueError as err:
        return None, str(err)


def reference_kinetics(trajectories) -> dict:
    """The reference analysed once with the library's defaults: display summary plus what the model reuses."""
    from latentlab.kinetics import analyze

    t0 = time.perf_counter()
    try:
        r = analyze(trajectories)
    except (ValueError, ImportError) as err:  # e.g. deeptime missing, too few frames
        return {"error": str(err).strip().splitlines()[0], "dt_ps": trajectories.dt_ps}
    return {"summary": _summary(r.to_dict(acf=True)), "basins": r.basins, "discretizer": r.discretizer,
            "dt_ps": trajectories.dt_ps, "lags_ps": [float(v) for v in r.its_lags_ps],
            "seconds": time.perf_counter() - t0}


class LiveKinetics:
    """A reporter: records the first ``walkers`` walkers and analyses them on request (:meth:`analyse`).

    Parameters
    ----------
    dt_ps : float
        The simulation's time step.
    names, periodic, units : sequences
        The latent coordinates.
    reference_dt_ps : float or None
        The reference's frame spacing (None: no time axis).
    walkers : int
        Walkers recorded at first.
    max_frames : int
        Bound on records x walkers kept.  When it is reached the spacing grows to the reference's frame
        spacing; after that fewer walkers are kept (longer trajectories at the same spacing); with 8 walkers
        left the spacing doubles.
    """

    def __init__(self, dt_ps: float, names, periodic, units, reference_dt_ps: float | None, walkers: int = 64,
                 max_frames: int = 400_000):
        self.dt_ps = float(dt_ps)
        self.names, self.periodic, self.units = list(names), list(periodic), list(units)
        self.reference_dt_ps = reference_dt_ps
        self.walkers, self.max_frames = int(walkers), int(max_frames)
        self.interval = record_interval(self.dt_ps, reference_dt_ps)
        self.steps: list[int] = []
        self.records: list[np.ndarray] = []
        self.reference: dict | None = None  # reference_kinetics() output, once known

    # ------------------------------------------------------------------ reporter
    def report(self, simulation) -> None:
        self.steps.append(int(simulation.state.step))
        self.records.append(simulation.state.Q[: self.walkers].detach().cpu().numpy().copy())
        if len(self.records) * self.walkers > self.max_frames:
            self._shrink()

    def _shrink(self) -> None:
        factor = self.reference_dt_ps / self.spacing_ps if self.reference_dt_ps else 0.0
        if _whole(factor) and round(factor) > 1:  # up to the reference's spacing
            self._respace(self.interval * int(round(factor)))
        elif self.walkers > 8:  # fewer, longer trajectories
            self.walkers //= 2
            self.records = [r[: self.walkers] for r in self.records]
        else:
            self._respace(self.interval * 2)

    def _respace(self, interval: int) -> None:
        keep = [i for i, s in enumerate(self.steps) if s % interval == 0]  # records stay evenly spaced
        self.steps = [self.steps[i] for i in keep]
        self.records = [self.records[i] for i in keep]
        self.interval = interval

    def state_dict(self) -> dict:
        return {"interval": self.interval, "walkers": self.walkers, "steps": list(self.steps),
                "records": list(self.records)}

    def load_state_dict(self, state: dict) -> None:
        self.interval, self.walkers = int(state["interval"]), int(state["walkers"])
        self.steps, self.records = list(state["steps"]), list(state["records"])

    @property
    def spacing_ps(self) -> float:
        return self.interval * self.dt_ps

    # ------------------------------------------------------------------ analysis
    def analyse(self, min_frames: int = 20) -> dict | None:
        """The model's ACFs, implied timescales (on the reference's states and lags), tau_int and MFPTs."""
        from latentlab.kinetics import Trajectories, analyze

        if len(self.records) < min_frames:
            return None
        Q = np.stack(self.records)  # (T, W, N)
        spacing = self.spacing_ps
        tr = Trajectories.from_arrays(Q, spacing, names=self.names, periodic=self.periodic, units=self.units,
                                      source="model")
        ref = self.reference if self.reference and "error" not in self.reference else None
        basins = ref["basins"] if ref else None
        lags = [v for v in (ref["lags_ps"] if ref else []) if _whole(v / spacing) and v / spacing < len(Q) - 1]
        msm = bool(lags) and ref is not None and ref.get("discretizer") is not None
        fine = analyze(tr, basins=basins, msm=msm, discretizer=ref["discretizer"] if msm else None,
                       lags_ps=lags if msm else None, n_samples=0, ck_sets=0)
        coarse = fine
        stride = self.reference_dt_ps / spacing if self.reference_dt_ps else 1.0
        if _whole(stride) and round(stride) > 1 and len(Q) // round(stride) >= min_frames:
            coarse = analyze(tr.strided(int(round(stride))), basins=basins, msm=False)
        f, c = fine.to_dict(acf=True), coarse.to_dict(acf=False)
        return {"spacing_ps": spacing, "simulated_ps": (len(Q) - 1) * spacing, "frames": len(Q), "walkers": Q.shape[1],
                "acf": thin_curves(f["acf"]), "its": f["its"], "analysis_dt_ps": c["dt_ps"],
                "tau_int_ps": c["tau_int_ps"], "tau_int_stderr_ps": c["tau_int_stderr_ps"], "mfpt_ps": c["mfpt_ps"],
                "mfpt_stderr_ps": c["mfpt_stderr_ps"],
                "mfpt_transitions": c["mfpt_transitions"], "warnings": list(c["warnings"])[:4]}


def _whole(x: float) -> bool:
    return math.isfinite(x) and x >= 1 - 1e-9 and abs(x - round(x)) < 1e-6 * max(1.0, abs(x))
