"""Friction calibration: the gamma that makes a CG model's kinetics match a reference's.

Latent Langevin dynamics (docs/theory.md section 4; Bruce, Aghili, Marinescu, Sabo, "Latent spaces for
Langevin dynamics") gets the equilibrium distribution from V(Q) and the inertia from A(Q), but the
friction gamma (amu/ps; friction rates ``gamma`` times the eigenvalues of A) is free: it sets the clock.
:func:`calibrate` finds the gamma at which one kinetic observable of the model equals the reference's:

* ``"slowest-timescale"``: an implied timescale of an MSM on the reference's states at the reference's
  lag (default the slowest);
* ``"mfpt"``: mean first-passage times between named basins (by default every ordered pair with at
  least :data:`MIN_TRANSITIONS` reference transitions);
* ``"acf"``: integrated autocorrelation times of coordinates (default all whose Sokal window the
  reference reaches).

With several observables (two MFPTs, several coordinates) the matched quantity is their
inverse-variance weighted mean log ratio

    f(gamma) = sum_i w_i ln(m_i(gamma) / r_i) / sum_i w_i,   w_i = 1 / s_i^2

(``s_i`` the reference's relative error of observable i), and the root of ``f`` is the calibrated
friction: the least-squares gamma in log space.

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
from latentlab.kinetics.basins import BasinSet, resolve_basins
from latentlab.kinetics.trajectories import Trajectories
from latentlab.units import FRICTION_UNITS
from latentlab.validation import fail

TARGETS = ("slowest-timescale", "mfpt", "acf")
BRANCHES = ("overdamped", "underdamped")

#: Reference transitions a first-passage pair needs to be a default calibration observable.
MIN_TRANSITIONS = 20

#: Bracketing step on ln gamma (a factor 4 in gamma).
STEP = math.log(4.0)

#: Smallest bracket width on ln gamma worth refining (5 %).
MIN_WIDTH = 0.05

#: Walker groups of the jackknife.
JACKKNIFE_GROUPS = 8

#: Default top of the search range, in units of 1 / (w_max dt) (w_max the largest eigenvalue of A): beyond it
#: the integrator's diffusion no longer depends on gamma (module docstring).
DT_LIMIT_FACTOR = 4.0

#: Relative difference counted as agreement in the comparison table (issue 12: within 30 %).
AGREEMENT = 0.30

_Z95 = 1.959963984540054


class CalibrationCancelled(Exception):
    """Raised when the caller's callback asks a calibration to stop (Ctrl-C raises KeyboardInterrupt)."""


# ---------------------------------------------------------------------- target
@dataclass
class CalibrationTarget:
    """What is matched: observables of the reference, how to measure them on a model, and their errors.

    Build it with :func:`reference_target`.

    Attributes
    ----------
    kind : {"slowest-timescale", "mfpt", "acf"}
    names : list of str
        One per observable: ``"t1"`` (implied timescale 1 = slowest), ``"C5->C7eq"``, ``"phi"``.
    reference_ps : np.ndarray, shape=(n_obs,), ps
    reference_log_sigma : np.ndarray, shape=(n_obs,)
        Standard error of ``ln`` of each reference value (relative error).
    weights : np.ndarray, shape=(n_obs,)
        Inverse-variance weights of the log ratios, summing to 1.
    reference : KineticsResult
        The full analysis of the reference (states, lag, basins, every observable).
    lag_ps : float or None
        MSM lag (slowest-timescale).
    process : int
        Which implied timescale (0 = slowest).
    pairs : list of (str, str)
        First-passage pairs (mfpt).
    coordinates : list of str
        Coordinates (acf).
    """

    kind: str
    names: list
    reference_ps: np.ndarray
    reference_log_sigma: np.ndarray
    weights: np.ndarray
    reference: KineticsResult
    lag_ps: float | None = None
    process: int = 0
    pairs: list = field(default_factory=list)
    coordinates: list = field(default_factory=list)

    @property
    def dt_ps(self) -> float:
        return self.reference.trajectories.dt_ps

    @property
    def basins(self) -> BasinSet | None:
        return self.reference.basins

    @property
    def sigma_reference(self) -> float:
        """Standard error of ``f`` from the reference's errors alone (independent observables)."""
        return float(math.sqrt(np.sum(self.weights ** 2 * self.reference_log_sigma ** 2)))

    def describe(self) -> dict:
        out = {"kind": self.kind, "observables": list(self.names), "reference_ps": self.reference_ps.tolist(),
               "reference_relative_error": self.reference_log_sigma.tolist(), "weights": self.weights.tolist(),
               "sigma_reference": self.sigma_reference}
        if self.kind == "slowest-timescale":
            out.update(lag_ps=self.lag_ps, process=self.process,
                       reference_interval_ps=self.reference.implied_timescales_interval_ps[self.process].tolist())
        if self.kind == "mfpt":
            out["basins"] = self.basins.describe()
        return _jsonable(out)

    # ------------------------------------------------------------------ measuring a model
    def prepare(self, trajectories: Trajectories):
        """Per-trajectory data the observables are computed from (state, basin or coordinate trajectories)."""
        if self.kind == "slowest-timescale":
            return self.reference.discretizer.transform(trajectories)
        if self.kind == "mfpt":
            names = sorted({b for p in self.pairs for b in p})
            masks = self.basins.masks(trajectories)
            return {b: masks[b] for b in names}
        return trajectories

    def values(self, prepared, index) -> tuple[np.ndarray, np.ndarray]:
        """Observables of the trajectories ``index``: values ``(n_obs,)`` ps and censoring flags ``(n_obs,)``.

        A first passage never seen is censored: its value is the lower bound ``time from A / 1``; an
        implied timescale that cannot be estimated is NaN.
        """
        from latentlab.kinetics import msm as msm_mod
        from latentlab.kinetics.acf import acf_analysis
        from latentlab.kinetics.mfpt import mfpt_direct

        n = len(self.names)
        censored = np.zeros(n, dtype=bool)
        if self.kind == "slowest-timescale":
            dtrajs = [prepared[i] for i in index]
            k = lag_frames(self.lag_ps, self.dt_ps)
            fit = msm_mod.fit_msm(dtrajs, k, self.reference.discretizer.n_states, n_samples=0,
                                  count_mode="sliding-effective")
            est, _, _ = msm_mod.timescales(fit, self.process + 1, self.dt_ps)
            return np.array([est[self.process]]), censored
        if self.kind == "mfpt":
            sub = {b: [m[i] for i in index] for b, m in prepared.items()}
            res = mfpt_direct(sub, self.dt_ps, self.pairs, n_bootstrap=0)
            out = np.empty(n)
            for j, (a, b) in enumerate(self.pairs):
                r = res[f"{a}->{b}"]
                if r["mfpt_ps"] is None:
                    censored[j] = True
                    out[j] = max(r["time_from_a_ps"], self.dt_ps)
                else:
                    out[j] = r["mfpt_ps"]
            return out, censored
        tr = replace(prepared, segments=tuple(prepared.segments[i] for i in index))
        acf = acf_analysis(tr)
        return np.array([acf["tau_int_ps"][c] for c in self.coordinates]), censored

    def measure(self, trajectories: Trajectories, groups: int = JACKKNIFE_GROUPS) -> dict:
        """The observables of a model's trajectories, ``f`` and its jackknife standard error.

        Returns
        -------
        dict
            ``values_ps`` (n_obs,), ``log_sigma`` (n_obs,) (jackknife), ``censored`` (n_obs,),
            ``f`` (weighted mean log ratio), ``sigma_f`` (jackknife), ``window_not_reached`` (coordinates
            whose tau_int is a lower bound: the trajectories end before Sokal's window).
        """
        prepared = self.prepare(trajectories)
        n_traj = trajectories.n_trajectories
        values, censored = self.values(prepared, range(n_traj))
        logr = np.log(self.reference_ps)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = float(np.sum(self.weights * (np.log(values) - logr)))
        g = int(min(groups, n_traj))
        log_sigma = np.full(len(values), np.nan)
        sigma_f = math.nan
        if g >= 2:
            labels = np.arange(n_traj) % g
            deleted = []
            for k in range(g):
                v, _ = self.values(prepared, np.nonzero(labels != k)[0])
                deleted.append(v)
            d = np.array(deleted)  # (g, n_obs)
            with np.errstate(divide="ignore", invalid="ignore"):
                logs = np.log(d)
                fs = np.sum(self.weights * (logs - logr), axis=1)
            if np.all(np.isfinite(fs)):
                sigma_f = float(math.sqrt((g - 1) / g * np.sum((fs - fs.mean()) ** 2)))
            ok = np.all(np.isfinite(logs), axis=0)
            log_sigma[ok] = np.sqrt((g - 1) / g * np.sum((logs[:, ok] - logs[:, ok].mean(0)) ** 2, axis=0))
        short = []
        if self.kind == "acf":
            from latentlab.kinetics.acf import acf_analysis

            reached = acf_analysis(trajectories)["tau_int_window_reached"]
            short = [c for c in self.coordinates if not reached[c]]
        return {"values_ps": values, "log_sigma": log_sigma, "censored": censored, "f": f, "sigma_f": sigma_f,
                "window_not_reached": short}


def reference_target(reference, target: str = "slowest-timescale", *, basins="auto", pairs=None, coordinates=None,
                     lag_ps: float | None = None, process: int = 0, n_clusters: int = 50, n_samples: int = 100,
                     seed: int = 0, analysis: KineticsResult | None = None) -> CalibrationTarget:
    """Analyse the reference and choose the observables to match.

    Parameters
    ----------
    reference : Trajectories
    target : {"slowest-timescale", "mfpt", "acf"}
    basins : str or BasinSet
        Basins of the first passages (``"auto"``: the built-in set that fits the coordinates).
    pairs : sequence of str or (str, str), optional
        ``"A->B"`` or ``"A<->B"`` (both directions) for ``target="mfpt"``; default every ordered pair
        with at least :data:`MIN_TRANSITIONS` reference transitions.
    coordinates : sequence of str, optional
        For ``target="acf"``; default every coordinate whose Sokal window the reference reaches.
    lag_ps : float, optional
        MSM lag (default: the reference's own choice, :func:`latentlab.kinetics.analyze`).
    process : int
        Implied timescale to match (0 = slowest).
    n_clusters, n_samples, seed :
        Of the reference's MSM (:func:`latentlab.kinetics.analyze`).
    analysis : KineticsResult, optional
        A full analysis of ``reference`` already made (with MSM and basins), reused.
    """
    if target not in TARGETS:
        fail("target", f"got {target!r}", f"use one of {', '.join(TARGETS)}")
    names = list(reference.names)
    if target == "acf" and coordinates is not None:  # checked before the (expensive) analysis
        coordinates = [str(c).strip() for c in coordinates if str(c).strip()]
        bad = [c for c in coordinates if c not in names]
        if bad or not coordinates:
            fail("--coordinates", f"unknown coordinate(s) {bad or coordinates}", f"use some of {', '.join(names)}")
    if target == "mfpt":
        bset = resolve_basins(basins, reference)
        if bset is None:
            fail("--basins", "no basins for first passages on these coordinates",
                 "define them, e.g. --basins \"A:phi<-2.1;B:-2.1<phi<0\" (see docs/kinetics.md)")
        if pairs is not None:
            _pairs(pairs, bset.names, {})
    ref = analysis
    if ref is None:
        ref = analyze(reference, basins=basins, lag_ps=lag_ps, n_clusters=n_clusters, n_samples=n_samples, seed=seed)
    if target == "slowest-timescale":
        its = ref.implied_timescales_ps
        iv = ref.implied_timescales_interval_ps
        if not 0 <= int(process) < its.size or not np.isfinite(its[int(process)]):
            fail("process", f"the reference has no implied timescale number {int(process) + 1} at lag {ref.lag_ps} ps",
                 "use process 0 (the slowest) or check the reference's kinetics ('latentlab kinetics')")
        p = int(process)
        t, (lo, hi) = float(its[p]), iv[p]
        if not t > ref.lag_ps:
            fail("--target", f"the reference's implied timescale {p + 1} ({t:.3g} ps) is not longer than its lag "
                 f"({ref.lag_ps:g} ps, frames every {reference.dt_ps:g} ps): the reference does not resolve it",
                 "use a reference saved more often (latentlab generate --save-every), or --target mfpt / acf")
        if np.isfinite(lo) and np.isfinite(hi) and lo > 0 and hi > lo:
            s = math.log(hi / lo) / (2 * _Z95)
        else:
            s = 0.1
        return CalibrationTarget("slowest-timescale", [f"t{p + 1}"], np.array([t]), np.array([s]), np.ones(1), ref,
                                 lag_ps=ref.lag_ps, process=p)
    if target == "mfpt":
        if ref.basins is None or not ref.mfpt:
            fail("--basins", "no basins for first passages on these coordinates",
                 "define them, e.g. --basins \"A:phi<-2.1;B:-2.1<phi<0\" (see docs/kinetics.md)")
        chosen = _pairs(pairs, ref.basins.names, ref.mfpt)
        vals, sig = [], []
        for a, b in chosen:
            r = ref.mfpt[f"{a}->{b}"]
            if r["mfpt_ps"] is None or r["stderr_ps"] is None:
                fail("--pairs", f"the reference has {r['transitions']} {a}->{b} transition(s): too few for a value "
                     "with an error bar", "choose pairs the reference crosses often (see 'latentlab kinetics')")
            vals.append(r["mfpt_ps"])
            sig.append(max(r["stderr_ps"] / r["mfpt_ps"], 1e-3))
        return _weighted("mfpt", [f"{a}->{b}" for a, b in chosen], vals, sig, ref, pairs=chosen)
    if coordinates is None:
        chosen = [c for c in names if ref.acf["tau_int_window_reached"][c]]
        if not chosen:
            fail("--coordinates", "the reference reaches Sokal's window for no coordinate (its trajectories are too "
                 "short for tau_int)", "use a longer reference or --target mfpt / slowest-timescale")
    else:
        chosen = coordinates
    vals = [ref.acf["tau_int_ps"][c] for c in chosen]
    sig = [max(ref.acf["tau_int_stderr_ps"][c] / ref.acf["tau_int_ps"][c], 1e-3) for c in chosen]
    return _weighted("acf", chosen, vals, sig, ref, coordinates=chosen)


def _weighted(kind, names, vals, sig, ref, **kw) -> CalibrationTarget:
    sig = np.asarray(sig, dtype=float)
    w = 1.0 / sig ** 2
    return CalibrationTarget(kind, list(names), np.asarray(vals, dtype=float), sig, w / w.sum(), ref, **kw)


def _pairs(pairs, names, mfpt: dict) -> list:
    """Ordered basin pairs from ``"A->B"`` / ``"A<->B"`` items (default: pairs with enough transitions in ``mfpt``)."""
    if pairs is None:
        out = [tuple(k.split("->")) for k, v in mfpt.items()
               if v["transitions"] >= MIN_TRANSITIONS and v["stderr_ps"] is not None]
        if not out:
            fail("--basins", f"no pair of basins has {MIN_TRANSITIONS} or more reference transitions "
                 "(" + ", ".join(f"{k}: {v['transitions']}" for k, v in mfpt.items()) + ")",
                 "use basins the reference moves between, a longer reference, or --target acf")
        return out
    if isinstance(pairs, str):
        pairs = [p for p in pairs.split(",") if p.strip()]
    out = []
    for p in pairs:
        if isinstance(p, (tuple, list)) and len(p) == 2:
            items = [(str(p[0]), str(p[1]))]
        else:
            text = str(p).strip()
            if "<->" in text:
                a, b = (s.strip() for s in text.split("<->", 1))
                items = [(a, b), (b, a)]
            elif "->" in text:
                a, b = (s.strip() for s in text.split("->", 1))
                items = [(a, b)]
            else:
                fail("--pairs", f"got {text!r}", "write A->B or A<->B with basin names, e.g. C5<->C7eq")
        for a, b in items:
            if a not in names or b not in names or a == b:
                fail("--pairs", f"{a}->{b} is not a pair of two basins of {names}", "use the names of --basins")
            if (a, b) not in out:
                out.append((a, b))
    return out


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
        negative on the underdamped branch, near 0 at the turnover).
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
        s = _Z95 * self.log_gamma_sigma
        return [self.gamma * math.exp(-s), self.gamma * math.exp(s)]

    def record(self) -> dict:
        """The ``calibration`` entry stored in ``model.training`` (JSON-ready)."""
        ref = self.target.reference.trajectories
        return _jsonable({
            "gamma": self.gamma, "gamma_stderr": self.gamma_stderr, "gamma_interval_95": self.gamma_interval,
            "log_gamma_sigma": self.log_gamma_sigma, "sensitivity": self.sensitivity, "branch": self.branch,
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

    from latentlab.simulation import CallbackReporter, Simulation, TrajectoryReporter

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
            "map": model.map_spec, "dataset": (model.training.get("dataset") or {}).get("name")
            if isinstance(model.training.get("dataset"), dict) else model.training.get("dataset")}
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
    return (f"the model's {_label(tgt)} stays shorter than the reference's ({math.exp(top['f']):.3g} x at gamma "
            f"{top['gamma']:.4g} amu/ps) up to the largest friction a {dt:g}-ps time step resolves "
            f"(gamma w_max dt = {DT_LIMIT_FACTOR:g}, w_max = {w_max:.3g} the largest eigenvalue of A): beyond "
            "it the integrator's timescales saturate.  A smaller --dt reaches larger frictions at proportional "
            "cost; compare the shapes of the ACFs first ('latentlab kinetics SIM --reference DATA'): a model "
            "that needs friction rates of thousands per ps lacks the reference's slow process")


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
    result.sensitivity = ev.d * root["slope"]
    result.model_values_ps = np.exp(logs)
    if result.gamma > 0.5 * ev.gamma_dt_limit:
        ev.warnings.append(f"gamma w_max dt = {result.gamma / ev.gamma_dt_limit:.2f} at the calibrated friction: the "
                           f"{ev.dt:g}-ps time step is coarse for it and the dynamics depend on dt; the friction "
                           f"belongs to this dt (simulate with --dt {ev.dt:g}, or calibrate again with a smaller one)")
    if abs(result.sensitivity) < 0.2:
        ev.warnings.append("the observable barely depends on gamma here (d ln / d ln gamma = "
                           f"{result.sensitivity:.2f}): near the turnover the calibration is weakly determined")


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
                     points=points, label=_label(tgt), to_gamma=lambda y: math.exp(d * y),
                     units=FRICTION_UNITS[model.friction_model])
    message, monotonic, turnover = _search_outcome(message, points, tgt, fr, dt, d, branch, model.friction_model,
                                                   warnings)
    result = CalibrationResult(False, None, None, None, branch, tgt, points, monotonic, turnover, message,
                               settings=settings, warnings=warnings)
    if _bracket(points) is None:
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
    monotonic, turnover = _monotonic(points, d)
    if not monotonic:
        warnings.append(f"the {_label(tgt)} is not monotonic in gamma: smallest near gamma {turnover:.4g} "
                        f"{FRICTION_UNITS[friction_model]} (Kramers turnover); the {branch} branch was used")
    return message, monotonic, turnover


def _friction_settings(model, fr: dict) -> dict:
    """The friction part of a calibration's recorded settings (``fr`` from :func:`_friction_range`)."""
    return {"gamma_start": fr["gamma_start"], "gamma_range": [fr["low"], fr["high"]],
            "jackknife_groups": JACKKNIFE_GROUPS, "gamma_dt_limit": fr["gamma_dt_limit"],
            "largest_mass_eigenvalue": fr["w_max"], "dynamics": model.dynamics,
            "friction_model": model.friction_model, "gamma_units": FRICTION_UNITS[model.friction_model]}


def search(evaluate, y_start: float, y_range, max_evaluations: int, sigma_reference: float = 0.0, *, points=None,
           label: str = "observable", to_gamma=math.exp, units: str = "amu/ps") -> str:
    """Bracket and narrow the root of a noisy increasing function ``f(y)``, ``y = +-ln gamma``.

    ``evaluate(y)`` runs one simulation and appends (or returns) a point ``{"y", "f", "sigma_f", ...}``;
    ``f`` increases with ``y`` on the wanted branch and tends to +infinity at large ``y`` (the slow end of
    the branch).  Steps of :data:`STEP` from ``y_start`` find two adjacent points with ``f < 0 <= f``
    (the largest such pair); safeguarded regula falsi then narrows it until it is no wider than the
    root's standard error (:func:`_sigma_y`) or :data:`MIN_WIDTH`.  While every point has ``f >= 0`` the
    search walks towards the smallest ``f`` (down the branch, or up when ``f`` rose towards small ``y``:
    the start lay beyond the turnover); once the smallest ``f`` lies between larger ones (the Kramers
    turnover) the points around it are refined to STEP/4, and if ``f`` stays positive there is no root.

    Parameters
    ----------
    evaluate : callable, float -> dict
    y_start : float
    y_range : (float, float)
        Smallest and largest y to evaluate.
    max_evaluations : int
    sigma_reference : float
        The reference's error of ``f`` (part of the stopping rule).
    points : list, optional
        Filled with the evaluated points (``evaluate``'s return values are appended unless it did so).
    label : str
        Name of the observable, for messages.
    to_gamma : callable
        ``y -> gamma`` for messages.
    units : str
        Units of gamma, for messages.

    Returns
    -------
    str
        Empty when a bracket was found, else why not.
    """
    points = [] if points is None else points
    y_lo, y_hi = float(y_range[0]), float(y_range[1])

    def run(y):
        n = len(points)
        p = evaluate(y)
        if len(points) == n:
            points.append(p)

    run(y_start)
    while len(points) < max_evaluations:
        bracket = _bracket(points)
        if bracket is not None:
            a, b = bracket
            width = b["y"] - a["y"]
            if width <= max(_sigma_y(a, b, sigma_reference), MIN_WIDTH):
                return ""
            y_new = a["y"] - a["f"] * width / (b["f"] - a["f"])
            run(min(max(y_new, a["y"] + 0.15 * width), b["y"] - 0.15 * width))
            continue
        pts = sorted(points, key=lambda q: q["y"])
        if pts[-1]["f"] < 0:  # too fast everywhere tried: towards the slow end of the branch
            y_new = pts[-1]["y"] + STEP
        else:  # every f >= 0 (too slow): towards the smallest f; refine it when it lies between larger ones
            i = int(np.argmin([q["f"] for q in pts]))
            if i == 0:  # f falls towards small y: down the branch
                y_new = pts[0]["y"] - STEP
            elif i == len(pts) - 1:  # f rose towards small y: past the turnover, its minimum lies above
                y_new = pts[-1]["y"] + STEP
            else:
                y_new = _probe_minimum(pts)
            if y_new is None:
                best = min(pts, key=lambda q: q["f"])
                return (f"no friction makes the model's {label} as short as the reference's: the shortest reached is "
                        f"{math.exp(best['f']):.3g} x the reference's, at gamma {to_gamma(best['y']):.4g} {units} (the "
                        "Kramers turnover); the model's barriers or its free-energy surface are too high for this "
                        "reference")
        if y_new is not None and not y_lo - 1e-9 <= y_new <= y_hi + 1e-9:
            # a step past an end of the range: to the end itself, unless it was evaluated already
            edge = y_hi if y_new > y_hi else y_lo
            if all(abs(q["y"] - edge) > 1e-9 for q in points):
                y_new = edge
        if not y_lo - 1e-9 <= y_new <= y_hi + 1e-9:
            closest = min(points, key=lambda q: abs(q["f"]))
            lo, hi = sorted((to_gamma(y_lo), to_gamma(y_hi)))
            return (f"no root in the friction range [{lo:.4g}, {hi:.4g}] {units}: the model's {label} stays "
                    + ("shorter" if pts[-1]["f"] < 0 else "longer") + " than the reference's (closest: "
                    f"{math.exp(closest['f']):.3g} x at gamma {to_gamma(closest['y']):.4g}); widen the range or check "
                    "the model")
        run(y_new)
    return "" if _bracket(points) is not None else (
        f"no bracket of the root within {max_evaluations} simulations; allow more or start nearer")



def root_from_points(points, sigma_reference: float = 0.0) -> dict | None:
    """The root of ``f`` by linear interpolation inside the final bracket (:func:`search`), and its error.

    Returns
    -------
    dict or None
        ``y`` (root), ``sigma_y`` (its standard error, :func:`_sigma_y`), ``slope`` (``df/dy`` of the bracket),
        ``width``, ``u`` (position of the root in the bracket, 0..1), ``low`` and ``high`` (the two points);
        None without a bracket.
    """
    bracket = _bracket(points)
    if bracket is None:
        return None
    a, b = bracket
    width = b["y"] - a["y"]
    u = -a["f"] / (b["f"] - a["f"])
    return {"y": a["y"] + u * width, "sigma_y": _sigma_y(a, b, sigma_reference), "slope": (b["f"] - a["f"]) / width,
            "width": width, "u": u, "low": a, "high": b}



def _label(tgt: CalibrationTarget) -> str:
    return {"slowest-timescale": "implied timescale " + tgt.names[0], "mfpt": "MFPTs (" + ", ".join(tgt.names) + ")",
            "acf": "tau_int (" + ", ".join(tgt.names) + ")"}[tgt.kind]


def _bracket(points):
    """Adjacent evaluations (in y) with f < 0 then f >= 0: the largest such pair, or None."""
    pts = sorted(points, key=lambda q: q["y"])
    found = [(p, q) for p, q in zip(pts, pts[1:])
             if np.isfinite(p["f"]) and np.isfinite(q["f"]) and p["f"] < 0 <= q["f"]]
    return found[-1] if found else None


def _noise(p) -> float:
    s = p["sigma_f"]
    return float(s) if s is not None and np.isfinite(s) else 0.0


def _diff_sigma(p, q) -> float:
    return math.hypot(_noise(p), _noise(q))


def _sigma_y(a, b, sigma_ref: float) -> float:
    """Standard error of the root on y from the reference's error and the simulation noise, via the bracket slope."""
    slope = (b["f"] - a["f"]) / (b["y"] - a["y"])
    u = -a["f"] / (b["f"] - a["f"])
    s_mod = (1 - u) * _noise(a) + u * _noise(b)
    return float(math.hypot(sigma_ref, s_mod) / abs(slope)) if slope != 0 else math.inf


def _probe_minimum(pts):
    """A y between the smallest-f evaluation and a neighbour not yet resolved to STEP/4, or None."""
    i = int(np.argmin([p["f"] for p in pts]))
    candidates = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(pts) and abs(pts[j]["y"] - pts[i]["y"]) > STEP / 4 + 1e-9:
            candidates.append((pts[j]["f"], 0.5 * (pts[i]["y"] + pts[j]["y"])))
    if not candidates:
        return None
    return min(candidates)[1]


def _monotonic(points, d: float):
    """Whether f is monotonic in gamma beyond noise, and the gamma of an interior minimum of f."""
    pts = sorted(points, key=lambda q: q["gamma"])
    ups = downs = False
    for p, q in zip(pts, pts[1:]):
        diff = q["f"] - p["f"]
        tol = 2 * _diff_sigma(p, q)
        ups |= diff > tol
        downs |= diff < -tol
    if ups and downs:
        i = int(np.argmin([p["f"] for p in pts]))
        return False, float(pts[i]["gamma"])
    return True, None


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
        re = (rhi - rlo) / (2 * _Z95) if np.isfinite(rlo) and np.isfinite(rhi) else None
        mlo = mhi = me = None
        if m is not None and i < iv_m.shape[0] and np.all(np.isfinite(iv_m[i])):
            mlo, mhi = (float(v) for v in iv_m[i])
            me = (mhi - mlo) / (2 * _Z95)
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
