"""Friction calibration: the gamma that makes a CG model's kinetics match a reference's.

Latent Langevin dynamics (docs/theory.md section 4; Bruce, Aghili, Marinescu, Sabo, "Latent spaces for
Langevin dynamics") gets the equilibrium distribution from V(Q) and the inertia from A(Q), but the
friction gamma (amu/ps; friction rates ``gamma`` times the eigenvalues of A) is free: it sets the clock.
:func:`calibrate` finds the gamma at which one kinetic observable of the model (an implied timescale,
mean first-passage times between basins, or integrated autocorrelation times) equals the reference's.
With several observables the matched quantity ``f(gamma)`` is their inverse-variance weighted mean log
ratio, and its root is the least-squares gamma in log space.  The observables and ``f`` are
:mod:`latentlab.kinetics.targets`; the root search on ``ln gamma`` is :mod:`latentlab.kinetics.root_search`;
this module runs the simulations, checks and records.

**Search.**  Each evaluation of ``f`` is a short simulation of ``n_walkers`` walkers started from
the same points with the same seed (common random numbers: the difference between two frictions is
then much less noisy than either value).  The root is bracketed on ``ln gamma`` in steps of a factor
4 from the model's friction (or ``"auto"``), then narrowed by safeguarded regula falsi until the
bracket is no wider than the statistical uncertainty of the root.  In the overdamped regime every
timescale grows with gamma (Kramers: rate ~ 1/gamma); in the underdamped regime it shrinks with gamma
(energy diffusion: rate ~ gamma), and in between lies the Kramers turnover, a minimum of the
timescale.  The search therefore takes a ``branch``: ``"overdamped"`` (default) looks for the root
where ``f`` increases with gamma, at the largest such crossing; ``"underdamped"`` for the one where it
decreases, at the smallest.  When the target is faster than the model can ever be (below the
turnover minimum), no gamma fits: the result says so, with the closest value reached.

**Time step.**  The integrator (:class:`latentlab.dynamics.LatentLangevin`) solves the friction part
exactly, ``P <- exp(-gamma w dt) P + noise`` along each eigenvector of A (eigenvalue w); once
``gamma w dt`` exceeds ~1 the momenta are refreshed every step and the positions random-walk with a
diffusion ~ ``kT A dt / 2`` that no longer depends on gamma, so the discrete dynamics saturate: no
friction makes them slower (for a harmonic oscillator, tau_int tends to ``2 / (A dt k)`` instead of
``gamma / k``; checked in the tests' harmonic system).  The default search range therefore ends at
``DT_LIMIT_FACTOR / (w_max dt)``, a calibrated gamma above ``0.5 / (w_max dt)`` comes with a warning,
and the friction belongs to the time step it was calibrated with (recorded with it).  With atomic friction
(``friction_model="atomic"``, gamma in 1/ps) every direction relaxes at the rate gamma and the limit is
``DT_LIMIT_FACTOR / dt``.  Brownian dynamics (``dynamics="brownian"``, the overdamped limit) has no such
saturation: large frictions, where the Langevin integrator would need tiny steps, cost nothing extra.

**Uncertainty.**  Two independent parts, carried to ``ln gamma`` through the local slope
``b = df/d ln gamma`` of the final bracket: the reference's own error of ``f``,
``s_ref = (sum_i 1/s_i^2)^(-1/2)``, and the simulation noise of ``f`` at the root, ``s_mod``, a
delete-one-group jackknife over walker groups (walkers are independent):
``s(ln gamma) = sqrt(s_ref^2 + s_mod^2) / |b|``.

**Afterwards.**  One independent run at the calibrated friction (another seed) is analysed like the
reference (its states, lag and basins), and every observable, used for the calibration or not, is
put next to the reference's (ratio, z-score in log space, within 30 %, inside the reference's 95 %
interval for implied timescales).  A Markovian Langevin with one scalar friction has one knob: when
the observables not used disagree, the model's free-energy surface or the missing memory is at
fault, and the numbers say by how much.

References
----------
Kramers, "Brownian motion in a field of force and the diffusion model of chemical reactions",
Physica 7, 284 (1940) (overdamped and energy-diffusion limits, the turnover).
Hanggi, Talkner, Borkovec, "Reaction-rate theory: fifty years after Kramers", Rev. Mod. Phys. 62,
251 (1990).
Glasserman & Yao, "Some guidelines and guarantees for common random numbers", Management Science 38,
884 (1992).
Efron & Stein, "The jackknife estimate of variance", Ann. Stat. 9, 586 (1981).
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from latentlab.kinetics.analysis import KineticsResult, _jsonable, analyze, lag_frames
from latentlab.kinetics.root_search import MIN_WIDTH, check_monotonic, find_bracket, root_from_points, search
from latentlab.kinetics.targets import JACKKNIFE_GROUPS, MIN_TRANSITIONS, Z95, CalibrationTarget, reference_target
from latentlab.kinetics.trajectories import Trajectories
from latentlab.units import FRICTION_UNITS
from latentlab.validation import fail

BRANCHES = ("overdamped", "underdamped")

#: Default top of the search range, in units of 1 / (w_max dt) (w_max the largest eigenvalue of A): beyond it
#: the integrator's diffusion no longer depends on gamma (module docstring).
DT_LIMIT_FACTOR = 4.0

#: Relative difference counted as agreement in the comparison table (issue 12: within 30 %).
AGREEMENT = 0.30


class CalibrationCancelled(Exception):
    """Raised when the caller's callback asks a calibration to stop (Ctrl-C raises KeyboardInterrupt)."""


# ---------------------------------------------------------------------- result
@dataclass
class CalibrationResult:
    """What :func:`calibrate` found (``to_dict()`` for JSON, :meth:`apply` for the calibrated model).

    Attributes
    ----------
    converged : bool
        A root was bracketed and narrowed.
    gamma : float or None, amu/ps
        The calibrated friction.
    log_gamma_sigma : float or None
        Standard error of ``ln gamma`` (``gamma_stderr = gamma * log_gamma_sigma``).
    sensitivity : float or None
        ``d f / d ln gamma`` at the root (about +1 deep in the overdamped regime for a rate process,
        negative on the underdamped branch, near 0 at the turnover): the weighted least-squares slope of the
        evaluations within ``SLOPE_SPAN`` in ``ln gamma`` of the root (the final bracket alone may be a few per
        cent wide, where the simulation noise swamps the slope).
    sensitivity_stderr : float or None
        Its standard error from the evaluations' ``sigma_f`` (taken as independent: an upper bound under the
        common random numbers the evaluations share).
    branch : str
    target : CalibrationTarget
    evaluations : list of dict
        Every simulation: ``gamma``, ``f``, ``sigma_f``, ``values_ps``, ``seconds``, ``problems``.
    monotonic : bool
        Whether ``f`` changed monotonically with gamma over the evaluated frictions (within noise).
    turnover_gamma : float or None
        Friction of the smallest evaluated ``f`` when it lies between larger values (the Kramers turnover).
    message : str
        Why there is no root (``converged`` False), else empty.
    check : dict or None
        The independent run at the calibrated gamma vs the reference (:func:`comparison_table`).
    settings : dict
    warnings : list of str
    seconds : float
    """

    converged: bool
    gamma: float | None
    log_gamma_sigma: float | None
    sensitivity: float | None
    branch: str
    target: CalibrationTarget
    evaluations: list
    monotonic: bool
    turnover_gamma: float | None
    message: str = ""
    sensitivity_stderr: float | None = None
    check: dict | None = None
    settings: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    seconds: float = 0.0
    model_values_ps: np.ndarray | None = None

    @property
    def gamma_stderr(self) -> float | None:
        return None if self.gamma is None else self.gamma * self.log_gamma_sigma

    @property
    def gamma_interval(self) -> list | None:
        """95 % interval of gamma (log-normal), amu/ps."""
        if self.gamma is None:
            return None
        s = Z95 * self.log_gamma_sigma
        return [self.gamma * math.exp(-s), self.gamma * math.exp(s)]

    def record(self) -> dict:
        """The ``calibration`` entry stored in ``model.training`` (JSON-ready)."""
        ref = self.target.reference.trajectories
        return _jsonable({
            "gamma": self.gamma, "gamma_stderr": self.gamma_stderr, "gamma_interval_95": self.gamma_interval,
            "log_gamma_sigma": self.log_gamma_sigma, "sensitivity": self.sensitivity,
            "sensitivity_stderr": self.sensitivity_stderr, "branch": self.branch,
            "target": self.target.describe(), "model_values_ps": self.model_values_ps,
            "reference": {"source": ref.source, "dataset": ref.dataset, "dt_ps": ref.dt_ps, "n_frames": ref.n_frames,
                          "n_trajectories": ref.n_trajectories},
            "settings": self.settings, "monotonic": self.monotonic, "turnover_gamma": self.turnover_gamma,
            "evaluations": [{k: e[k] for k in ("gamma", "f", "sigma_f", "values_ps", "seconds")}
                            for e in self.evaluations],
            "check": self.check, "warnings": list(self.warnings), "seconds": self.seconds,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})

    def to_dict(self) -> dict:
        out = self.record()
        out.update(converged=self.converged, message=self.message,
                   evaluations=[_jsonable(dict(e)) for e in self.evaluations])
        return _jsonable(out)

    def apply(self, model):
        """The model with the calibrated friction, the dynamics and friction model it belongs to, and the
        calibration record (a new :class:`CGModel`)."""
        if not self.converged or self.gamma is None:
            fail("calibration", self.message or "did not converge", "inspect the evaluations; no friction fits")
        training = dict(model.training)
        training["calibration"] = self.record()
        return replace(model, friction=float(self.gamma), training=training,
                       dynamics=self.settings.get("dynamics", model.dynamics),
                       friction_model=self.settings.get("friction_model", model.friction_model))


# ---------------------------------------------------------------------- simulation
def _check_model(model, reference: Trajectories) -> None:
    periodic = tuple(bool(p) for p in model.periodic)
    if tuple(model.names) != tuple(reference.names) or periodic != tuple(reference.periodic):
        fail("reference", f"has coordinates {list(reference.names)} (periodic {list(reference.periodic)}) but the "
             f"model has {list(model.names)} (periodic {list(model.periodic)})",
             "calibrate against data of the model's system, mapped with the model's map")


def simulate_trajectories(model, gamma: float, start, *, dt: float, record_every: int, n_records: int,
                          burn_records: int = 0, seed: int = 0, device="cpu", bar=None, callback=None):
    """Run walkers at one friction and return their records as :class:`Trajectories` plus the run's summary.

    Parameters
    ----------
    model : CGModel
    gamma : float, amu/ps
    start : array, shape=(n_walkers, n_cg)
    dt : float, ps
    record_every : int
        Steps between records.
    n_records, burn_records : int
        Records kept, and records dropped before them.
    seed : int
        Integrator noise (common random numbers: same seed, same start for every friction).
    bar : tqdm bar, optional
        Advanced by the steps done.
    callback : callable, optional
        ``callback({"event": "progress", ...}) -> bool``; True stops (:class:`CalibrationCancelled`).

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C during the run.
    """
    import torch

    from latentlab.simulation import CallbackReporter, Simulation, TrajectoryReporter, dataset_name

    rec = TrajectoryReporter(every=record_every, energies=False)
    cancelled = []

    def tick(sim):
        if bar is not None:
            bar.update(record_every)
        if callback is not None and callback({"event": "progress", "gamma": gamma, "step": sim.step_count}):
            cancelled.append(True)
            return True
        return None

    sim = Simulation(model, n_walkers=start.shape[0], dt=dt, gamma=float(gamma), device=device, seed=seed,
                     start=start, reporters=[rec, CallbackReporter(tick, every=record_every)])
    total = (n_records + burn_records) * record_every
    summary = sim.run(total)
    if sim.interrupted:
        raise KeyboardInterrupt
    if cancelled:
        raise CalibrationCancelled("stopped by the caller")
    Q = torch.stack(rec.Q[burn_records:]).numpy() if len(rec.Q) > burn_records else np.zeros((0,) + tuple(start.shape))
    restarts = []
    for step, walker in sim.state.restarts:
        r = int(math.ceil(step / record_every)) - 1 - burn_records  # first kept record after the restart
        if r > 0:
            restarts.append((r, int(walker)))
    meta = {"names": list(model.names), "periodic": list(model.periodic), "units": list(model.units),
            "map": model.map_spec, "dataset": dataset_name(model.training.get("dataset"))}
    sim_dict = {"Q": Q, "time": (np.arange(Q.shape[0]) + 1 + burn_records) * record_every * dt, "metadata": meta,
                "restarts": np.asarray(restarts, dtype=int).reshape(-1, 2)}
    tr = Trajectories.from_simulation(sim_dict, burn_in=0.0)
    return tr, {"problems": sim.problems(), "summary": summary, "seconds": sim.seconds}


# ---------------------------------------------------------------------- the search
def _check_arguments(model, reference, branch: str, n_walkers: int, max_evaluations: int, dt, burn_in) -> int:
    """Validate :func:`calibrate`'s arguments; return the integrator steps per reference frame."""
    if not isinstance(reference, Trajectories):
        fail("reference", f"got {type(reference).__name__}",
             "pass latentlab.kinetics.Trajectories (see docs/kinetics.md)")
    _check_model(model, reference)
    if branch not in BRANCHES:
        fail("branch", f"got {branch!r}", f"use one of {', '.join(BRANCHES)}")
    if int(n_walkers) < JACKKNIFE_GROUPS:
        fail("n_walkers", f"got {n_walkers}", f"use at least {JACKKNIFE_GROUPS} walkers (their spread gives the noise)")
    if int(max_evaluations) < 2:
        fail("max_evaluations", f"got {max_evaluations}", "allow at least 2 simulations (a bracket needs two)")
    if not (isinstance(dt, (int, float)) and dt > 0 and math.isfinite(dt)):
        fail("dt", f"got {dt!r}", "give a positive time step in ps")
    if not 0.0 <= float(burn_in) < 10.0:
        fail("burn_in", f"got {burn_in}", "give a fraction of the length, e.g. 0.1")
    record_every = reference.dt_ps / dt
    if abs(record_every - round(record_every)) > 1e-6 * record_every or round(record_every) < 1:
        fail("dt", f"{dt:g} ps does not divide the reference's frame spacing ({reference.dt_ps:g} ps)",
             f"use a time step that divides {reference.dt_ps:g} ps, e.g. 0.002")
    return int(round(record_every))


def _record_counts(tgt: CalibrationTarget, frame_ps: float, length_ps, burn_in: float) -> tuple[int, int]:
    """Records kept per walker and records burnt before them (frames of ``frame_ps`` ps each).

    The default length is 20 x the reference's observable (40 to 2,000 frames); the burn-in is at least
    ``burn_in`` x the length and two of the observable's own times (walkers start on data frames and settle).
    """
    if length_ps is None:
        scale = float(np.max(tgt.reference_ps))
        if tgt.kind == "slowest-timescale":
            scale = max(scale, tgt.lag_ps)
        n_records = int(min(2000, max(40, math.ceil(20 * scale / frame_ps))))
    else:
        n_records = int(round(float(length_ps) / frame_ps))
        if n_records < 4:
            fail("length_ps", f"{length_ps} ps is fewer than 4 reference frames ({frame_ps:g} ps)",
                 "simulate longer walkers")
    if tgt.kind == "slowest-timescale" and n_records <= 2 * lag_frames(tgt.lag_ps, frame_ps):
        fail("length_ps", f"{n_records * frame_ps:g} ps per walker is not more than twice the lag "
             f"({tgt.lag_ps:g} ps)", "simulate longer walkers")
    # Walkers start on data frames: drop at least two of the observable's own times while they settle.
    scale = float(np.max(tgt.reference_ps)) if tgt.kind != "mfpt" else float(np.min(tgt.reference_ps))
    burn_records = int(max(math.ceil(float(burn_in) * n_records), math.ceil(2.0 * scale / frame_ps)))
    return n_records, burn_records


def _calibration_start(model, reference: Trajectories, n_walkers: int, seed: int):
    """Start points, shape=(n_walkers, n_cg): the model's data start points, else frames of the reference."""
    import torch

    from latentlab.simulation import start_points

    if model.start_points is not None and model.start_points.shape[0] > 0:
        return start_points(model, n_walkers, "data", seed)
    frames = reference.concatenated()  # equilibrium samples
    idx = np.random.default_rng(seed).integers(0, frames.shape[0], n_walkers)
    return torch.as_tensor(frames[idx], dtype=torch.float64)


def _friction_range(model, q0, dt: float, gamma_start, gamma_range) -> dict:
    """The frictions searched (in the model's friction units) and the time step's limit on them.

    Returns ``gamma_start``, ``low``, ``high``, ``gamma_dt_limit`` (``1 / (w_max dt)`` for coordinate
    friction, ``1 / dt`` for atomic friction, infinite for Brownian dynamics), ``w_max`` (the median over
    ``q0`` of A's largest eigenvalue) and ``dt_limited`` (the default range was cut there).
    """
    import torch

    from latentlab.simulation import auto_gamma

    units = FRICTION_UNITS[model.friction_model]
    if gamma_start is None:
        gamma_start = model.friction if model.friction is not None else auto_gamma(
            model.mass, q0, friction_model=model.friction_model)
    gamma_start = float(gamma_start)
    if not (gamma_start > 0 and math.isfinite(gamma_start)):
        fail("gamma_start", f"got {gamma_start}", f"give a positive friction in {units}")
    # Largest friction rate per step the integrator resolves: past gamma w_max dt ~ 1 the O-step refreshes the
    # momenta of the stiffest latent direction every step, the splitting's diffusion tends to kT A dt / 2 whatever
    # gamma is, and more friction no longer slows the dynamics down (its timescales saturate).
    w_max = float(torch.linalg.eigvalsh(model.mass(q0.to(torch.float64)))[:, -1].median())
    gamma_dt_limit = {"coordinate": 1.0 / (w_max * float(dt)), "atomic": 1.0 / float(dt)}[model.friction_model]
    if model.dynamics == "brownian":  # no momenta to refresh: nothing saturates
        gamma_dt_limit = math.inf
    dt_limited = False
    if gamma_range is None:
        lo, hi = gamma_start / 1024.0, gamma_start * 1024.0
        if hi > DT_LIMIT_FACTOR * gamma_dt_limit:
            hi, dt_limited = max(DT_LIMIT_FACTOR * gamma_dt_limit, gamma_start), True
    else:
        lo, hi = (float(v) for v in gamma_range)
        if not (0 < lo < hi and math.isfinite(hi)):
            fail("gamma_range", f"got {gamma_range}", f"give two frictions 0 < low < high in {units}")
        gamma_start = min(max(gamma_start, lo), hi)
    return {"gamma_start": gamma_start, "low": lo, "high": hi, "gamma_dt_limit": gamma_dt_limit, "w_max": w_max,
            "dt_limited": dt_limited}


@dataclass
class _Evaluations:
    """The simulations of one calibration: their fixed settings, the points evaluated so far, the warnings.

    ``q0`` has shape (n_walkers, n_cg); ``dt`` and ``frame_ps`` (the reference's frame spacing) are in ps;
    ``d`` is +1 on the overdamped branch and -1 on the underdamped one (the search runs in ``y = d ln gamma``);
    ``gamma_dt_limit`` is ``1 / (w_max dt)`` in amu/ps.
    """

    model: object
    target: CalibrationTarget
    q0: object
    dt: float
    record_every: int
    n_records: int
    burn_records: int
    frame_ps: float
    d: float
    gamma_dt_limit: float
    max_evaluations: int
    seed: int = 0
    device: object = "cpu"
    progress: bool = False
    callback: object = None
    points: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

    def simulate(self, gamma: float, n_records: int, seed: int, desc: str):
        """:func:`simulate_trajectories` from ``q0`` at ``gamma`` (the model's friction units), with a tqdm bar."""
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=(n_records + self.burn_records) * self.record_every, unit="step", leave=False, desc=desc)
        try:
            return simulate_trajectories(self.model, gamma, self.q0, dt=self.dt, record_every=self.record_every,
                                         n_records=n_records, burn_records=self.burn_records, seed=seed,
                                         device=self.device, bar=bar, callback=self.callback)
        finally:
            if bar is not None:
                bar.close()

    def __call__(self, y: float) -> dict:
        """Simulate at ``gamma = exp(d y)``, measure the target and record the point (``f``, ``sigma_f``, ...)."""
        gamma = math.exp(self.d * y)
        tr, info = self.simulate(gamma, self.n_records, self.seed,
                                 f"gamma {gamma:.4g} ({len(self.points) + 1}/{self.max_evaluations})")
        t0 = time.perf_counter()
        m = self.target.measure(tr)
        p = {"y": y, "gamma": gamma, "gamma_w_dt": gamma / self.gamma_dt_limit, "f": m["f"],
             "sigma_f": m["sigma_f"], "values_ps": m["values_ps"], "log_sigma": m["log_sigma"],
             "censored": m["censored"], "problems": info["problems"], "seconds": info["seconds"],
             "analysis_seconds": time.perf_counter() - t0}
        self.points.append(p)
        if self.progress:
            from tqdm.auto import tqdm

            vals = ", ".join(f"{n} {v:.4g} ps" for n, v in zip(self.target.names, p["values_ps"]))
            units = FRICTION_UNITS[self.model.friction_model]
            tqdm.write(f"gamma {gamma:10.4g} {units}: {vals}; ln(model/reference) {p['f']:+.3f} "
                       f"+- {p['sigma_f']:.3f}  ({p['seconds']:.0f} s)")
        for text in info["problems"]:
            self.warnings.append(f"at gamma {gamma:.4g}: {text}")
        if m["window_not_reached"]:
            self.warnings.append(f"at gamma {gamma:.4g}: the walkers ({self.n_records * self.frame_ps:g} ps) end "
                                 f"before Sokal's window for tau_int of {', '.join(m['window_not_reached'])}: a "
                                 "lower bound (simulate longer walkers)")
        if self.callback is not None and self.callback({"event": "evaluation", **_jsonable(
                {k: v for k, v in p.items() if k not in ("y",)})}):
            raise CalibrationCancelled("stopped by the caller")
        return p


def _saturation_message(tgt: CalibrationTarget, points: list, dt: float, w_max: float) -> str:
    """Why no root: the observable stays too short up to the friction where the time step saturates."""
    top = max(points, key=lambda q: q["gamma"])
    return (f"the model's {tgt.label} stays shorter than the reference's ({math.exp(top['f']):.3g} x at gamma "
            f"{top['gamma']:.4g} amu/ps) up to the largest friction a {dt:g}-ps time step resolves "
            f"(gamma w_max dt = {DT_LIMIT_FACTOR:g}, w_max = {w_max:.3g} the largest eigenvalue of A): beyond "
            "it the integrator's timescales saturate.  A smaller --dt reaches larger frictions at proportional "
            "cost; compare the shapes of the ACFs first ('latentlab kinetics SIM --reference DATA'): a model "
            "that needs friction rates of thousands per ps lacks the reference's slow process")


#: Half-width in ln gamma of the evaluations that give the sensitivity at the root.
SLOPE_SPAN = 0.5


def _local_slope(points: list, root: dict, d: float) -> tuple[float, float]:
    """``d f / d ln gamma`` at the root and its standard error: the weighted (1/sigma_f^2) least-squares line through
    the finite evaluations within SLOPE_SPAN of the root in ``y = d ln gamma`` (the bracket's two at least)."""
    near = [p for p in points if np.isfinite(p["f"]) and abs(p["y"] - root["y"]) <= SLOPE_SPAN]
    for p in (root["low"], root["high"]):
        if not any(q is p for q in near):
            near.append(p)
    y = np.array([p["y"] for p in near])
    f = np.array([p["f"] for p in near])
    sig = np.array([p["sigma_f"] if p["sigma_f"] is not None and np.isfinite(p["sigma_f"]) and p["sigma_f"] > 0
                    else np.nan for p in near])
    w = 1.0 / sig**2 if np.isfinite(sig).all() else np.ones_like(y)
    ybar = np.sum(w * y) / np.sum(w)
    sxx = np.sum(w * (y - ybar) ** 2)
    slope = float(np.sum(w * (y - ybar) * f) / sxx)
    stderr = float(1.0 / math.sqrt(sxx)) if np.isfinite(sig).all() else math.nan
    return d * slope, stderr


def _set_root(result: CalibrationResult, ev: _Evaluations) -> None:
    """Interpolate the calibrated friction between the final bracket's points into ``result`` (with warnings)."""
    root = root_from_points(ev.points, ev.target.sigma_reference)
    a, b, u, y_root, sy = root["low"], root["high"], root["u"], root["y"], root["sigma_y"]
    if root["width"] > max(sy, MIN_WIDTH) * 1.0001:
        ev.warnings.append(f"the final bracket (a factor {math.exp(root['width']):.3g} in gamma) is wider than the "
                           "root's uncertainty: the interpolated gamma carries an extra error (raise max_evaluations)")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = (1 - u) * np.log(a["values_ps"]) + u * np.log(b["values_ps"])
    result.converged = True
    result.gamma = math.exp(ev.d * y_root)
    result.log_gamma_sigma = sy
    result.sensitivity, result.sensitivity_stderr = _local_slope(ev.points, root, ev.d)
    result.model_values_ps = np.exp(logs)
    if result.gamma > 0.5 * ev.gamma_dt_limit:
        ev.warnings.append(f"gamma w_max dt = {result.gamma / ev.gamma_dt_limit:.2f} at the calibrated friction: the "
                           f"{ev.dt:g}-ps time step is coarse for it and the dynamics depend on dt; the friction "
                           f"belongs to this dt (simulate with --dt {ev.dt:g}, or calibrate again with a smaller one)")
    if abs(result.sensitivity) < 0.2:
        ev.warnings.append("the observable barely depends on gamma here (d ln / d ln gamma = "
                           f"{result.sensitivity:.2f} +- {result.sensitivity_stderr:.2f}): near the turnover the "
                           "calibration is weakly determined")


def _check_run(result: CalibrationResult, ev: _Evaluations, check_length_ps, n_samples: int, n_walkers: int) -> dict:
    """Simulate once more at the calibrated friction (seed + 1) and compare every observable with the reference."""
    n_check = ev.n_records * 2 if check_length_ps is None else max(4, int(round(check_length_ps / ev.frame_ps)))
    tr, info = ev.simulate(result.gamma, n_check, ev.seed + 1, f"check at gamma {result.gamma:.4g}")
    ref = ev.target.reference
    lags = None if ref.its_lags_ps.size == 0 else ref.its_lags_ps
    res = analyze(tr, basins=ref.basins, lag_ps=ref.lag_ps, lags_ps=lags, discretizer=ref.discretizer,
                  n_samples=n_samples, ck_sets=0, seed=ev.seed)
    table = comparison_table(res, ref, ev.target)
    table.update(gamma=result.gamma, seed=ev.seed + 1, length_ps=n_check * ev.frame_ps,
                 n_walkers=int(n_walkers), seconds=info["seconds"], problems=info["problems"])
    for text in info["problems"]:
        ev.warnings.append(f"check run: {text}")
    return table


def calibrate(model, reference, target: str = "slowest-timescale", *, basins="auto", pairs=None, coordinates=None,
              lag_ps: float | None = None, process: int = 0, n_walkers: int = 256, length_ps: float | None = None,
              burn_in: float = 0.1, dt: float = 0.002, seed: int = 0, gamma_start=None, gamma_range=None,
              branch: str = "overdamped", max_evaluations: int = 12, check: bool = True,
              check_length_ps: float | None = None, n_clusters: int = 50, n_samples: int = 100,
              device="cpu", progress: bool = False, callback=None, reference_analysis=None, dynamics=None,
              friction_model=None) -> CalibrationResult:
    """Find the friction gamma at which the model's chosen kinetic observable matches the reference's.

    Parameters
    ----------
    model : latentlab.model.CGModel
    reference : Trajectories
        The reference in the model's coordinates (e.g. ``Trajectories.from_dataset(ds, cg_map=model.cg_map(ds))``).
    target : {"slowest-timescale", "mfpt", "acf"}
    basins, pairs, coordinates, lag_ps, process :
        Which observables (:func:`reference_target`).
    n_walkers : int
        Walkers per evaluation (at least 8: the jackknife needs groups of them).
    length_ps : float, optional
        Recorded time per walker and evaluation, ps (default: 20 x the reference's observable, at
        least 40 frames, at most 2,000 frames).
    burn_in : float
        Extra time simulated and dropped before recording, as a fraction of ``length_ps`` (at least twice
        the reference's observable: the walkers start on data frames and settle first).
    dt : float, ps
        Time step; must divide the reference's frame spacing.  The calibrated gamma belongs to this dt
        (it is recorded; simulate with the same dt).
    seed : int
        Start points and noise of every evaluation (common random numbers); the check run uses seed + 1.
    gamma_start : float, optional
        First friction tried (default: the model's friction, else ``auto``).
    gamma_range : (float, float), optional
        Frictions searched (default: a factor 1024 either side of the start).
    branch : {"overdamped", "underdamped"}
        Which side of the Kramers turnover the root is taken on (module docstring).
    max_evaluations : int
        Simulations at most for the search (the check run comes on top).
    check : bool
        Run once more at the calibrated friction and compare every observable with the reference.
    check_length_ps : float, optional
        Length of that run per walker (default 2 x ``length_ps``).
    n_clusters, n_samples : int
        Reference MSM (and posterior samples of the check).
    device : str or torch.device
    progress : bool
        tqdm progress bars.
    callback : callable, optional
        ``callback(event: dict) -> bool | None`` after every evaluation (``event["event"] == "evaluation"``)
        and every record (``"progress"``); returning True stops with :class:`CalibrationCancelled`.
    reference_analysis : KineticsResult, optional
        A full analysis of ``reference`` to reuse.
    dynamics : {"langevin", "brownian"}, optional
        The dynamics to calibrate (default the model's): underdamped latent Langevin or its overdamped limit.
    friction_model : {"coordinate", "atomic"}, optional
        Friction ``-gamma dQ/dt`` (gamma in amu/ps) or the same collision rate on every atom (1/ps) (default
        the model's; :mod:`latentlab.dynamics.langevin`).  The model's own friction is the first one tried
        only when the friction model is unchanged.

    Returns
    -------
    CalibrationResult
        ``converged`` False (with ``message``) when no friction in the range matches.
    """
    from latentlab.simulation.simulation import tabulated

    t_start = time.perf_counter()
    record_every = _check_arguments(model, reference, branch, n_walkers, max_evaluations, dt, burn_in)
    tgt = reference_target(reference, target, basins=basins, pairs=pairs, coordinates=coordinates, lag_ps=lag_ps,
                           process=process, n_clusters=n_clusters, n_samples=n_samples, seed=seed,
                           analysis=reference_analysis)
    n_records, burn_records = _record_counts(tgt, reference.dt_ps, length_ps, burn_in)
    model = tabulated(model.with_dynamics(dynamics, friction_model))
    q0 = _calibration_start(model, reference, int(n_walkers), seed)
    fr = _friction_range(model, q0, dt, gamma_start, gamma_range)
    settings = {"n_walkers": int(n_walkers), "length_ps": n_records * reference.dt_ps,
                "burn_in_ps": burn_records * reference.dt_ps, "dt": float(dt), "record_every": record_every,
                "seed": int(seed), "branch": branch, "max_evaluations": int(max_evaluations), "device": str(device),
                **_friction_settings(model, fr)}
    d = 1.0 if branch == "overdamped" else -1.0  # search in y = d ln(gamma): f increases with y on the branch
    ev = _Evaluations(model, tgt, q0, dt, record_every, n_records, burn_records, reference.dt_ps, d,
                      fr["gamma_dt_limit"], int(max_evaluations), seed, device, progress, callback)
    points, warnings = ev.points, ev.warnings
    y_lo, y_hi = sorted((d * math.log(fr["low"]), d * math.log(fr["high"])))
    message = search(ev, d * math.log(fr["gamma_start"]), (y_lo, y_hi), int(max_evaluations), tgt.sigma_reference,
                     points=points, label=tgt.label, to_gamma=lambda y: math.exp(d * y),
                     units=FRICTION_UNITS[model.friction_model])
    message, monotonic, turnover = _search_outcome(message, points, tgt, fr, dt, d, branch, model.friction_model,
                                                   warnings)
    result = CalibrationResult(False, None, None, None, branch, tgt, points, monotonic, turnover, message,
                               settings=settings, warnings=warnings)
    if find_bracket(points) is None:
        result.message = message or "no bracket of the root"
    else:
        _set_root(result, ev)
        if check:
            result.check = _check_run(result, ev, check_length_ps, n_samples, n_walkers)
    result.seconds = time.perf_counter() - t_start
    return result


def _search_outcome(message: str, points: list, tgt, fr: dict, dt: float, d: float, branch: str,
                    friction_model: str, warnings: list) -> tuple[str, bool, float | None]:
    """The search's message (explaining a root beyond the time step's reach), whether the observable is
    monotonic in gamma and where it turns over (a warning appended to ``warnings`` when it does)."""
    if message.startswith("no root in the friction range") and fr["dt_limited"] and d > 0 \
            and max(points, key=lambda q: q["y"])["f"] < 0:
        message = _saturation_message(tgt, points, dt, fr["w_max"])
    monotonic, turnover = check_monotonic(points)
    if not monotonic:
        warnings.append(f"the {tgt.label} is not monotonic in gamma: smallest near gamma {turnover:.4g} "
                        f"{FRICTION_UNITS[friction_model]} (Kramers turnover); the {branch} branch was used")
    return message, monotonic, turnover


def _friction_settings(model, fr: dict) -> dict:
    """The friction part of a calibration's recorded settings (``fr`` from :func:`_friction_range`)."""
    return {"gamma_start": fr["gamma_start"], "gamma_range": [fr["low"], fr["high"]],
            "jackknife_groups": JACKKNIFE_GROUPS, "gamma_dt_limit": fr["gamma_dt_limit"],
            "largest_mass_eigenvalue": fr["w_max"], "dynamics": model.dynamics,
            "friction_model": model.friction_model, "gamma_units": FRICTION_UNITS[model.friction_model]}


# ---------------------------------------------------------------------- afterwards
def comparison_table(model: KineticsResult, reference: KineticsResult, target: CalibrationTarget | None = None,
                     n_timescales: int = 3) -> dict:
    """Every kinetic observable of a model next to the reference's, with what was used for calibration.

    Rows: implied timescales (the first ``n_timescales`` at the reference's lag, with both 95 %
    intervals), MFPTs of every pair the reference crosses at least :data:`MIN_TRANSITIONS` times,
    tau_int of every coordinate.  Each row has
    ``reference``, ``reference_error``, ``model``, ``model_error``, ``ratio`` (model / reference),
    ``z`` (difference of the logs over their combined relative error), ``within_30`` and ``used``.

    Returns
    -------
    dict
        ``rows`` (list of dict), ``lag_ps``, ``analysis_dt_ps``, ``model_process_basins``,
        ``reference_process_basins``, ``warnings``.
    """
    rows = []
    used = set()
    if target is not None:
        used = {(target.kind, n) for n in target.names}

    def row(kind, name, r, re, m, me, extra=None):
        out = {"kind": kind, "name": name, "reference": r, "reference_error": re, "model": m, "model_error": me,
               "ratio": None, "z": None, "within_30": None, "used": (kind, name) in used}
        if r is not None and m is not None and r > 0 and m > 0 and math.isfinite(r) and math.isfinite(m):
            out["ratio"] = m / r
            out["within_30"] = bool(abs(m / r - 1.0) <= AGREEMENT)
            s2 = (re / r if re else 0.0) ** 2 + (me / m if me else 0.0) ** 2
            out["z"] = math.log(m / r) / math.sqrt(s2) if s2 > 0 else None
        out.update(extra or {})
        rows.append(out)

    its_r, iv_r = reference.implied_timescales_ps, reference.implied_timescales_interval_ps
    its_m, iv_m = model.implied_timescales_ps, model.implied_timescales_interval_ps
    for i in range(min(n_timescales, its_r.size)):
        r, m = float(its_r[i]), float(its_m[i]) if i < its_m.size else None
        rlo, rhi = (float(v) for v in iv_r[i])
        re = (rhi - rlo) / (2 * Z95) if np.isfinite(rlo) and np.isfinite(rhi) else None
        mlo = mhi = me = None
        if m is not None and i < iv_m.shape[0] and np.all(np.isfinite(iv_m[i])):
            mlo, mhi = (float(v) for v in iv_m[i])
            me = (mhi - mlo) / (2 * Z95)
        inside = None if m is None or re is None else bool(rlo <= m <= rhi)
        row("slowest-timescale", f"t{i + 1}", r, re, m, me,
            {"reference_interval": [rlo, rhi], "model_interval": None if mlo is None else [mlo, mhi],
             "inside_reference_interval": inside, "resolved": bool(r > reference.lag_ps)})
    for key, v in reference.mfpt.items():
        if v["mfpt_ps"] is None or v["transitions"] < MIN_TRANSITIONS:
            continue
        mv = model.mfpt.get(key, {})
        row("mfpt", key, v["mfpt_ps"], v["stderr_ps"], mv.get("mfpt_ps"), mv.get("stderr_ps"),
            {"reference_transitions": v["transitions"], "model_transitions": mv.get("transitions")})
    for name, t in reference.tau_int_ps.items():
        row("acf", name, t, reference.acf["tau_int_stderr_ps"][name], model.tau_int_ps.get(name),
            model.acf["tau_int_stderr_ps"].get(name),
            {"reference_window_reached": reference.acf["tau_int_window_reached"][name],
             "model_window_reached": model.acf["tau_int_window_reached"].get(name)})
    return _jsonable({"rows": rows, "lag_ps": reference.lag_ps, "analysis_dt_ps": reference.trajectories.dt_ps,
                      "model_process_basins": model.process_basins,
                      "reference_process_basins": reference.process_basins,
                      "model_warnings": list(model.warnings)})
