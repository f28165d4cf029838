"""Calibration targets: which kinetic observables of a reference a CG model is made to match.

:func:`reference_target` analyses the reference and picks the observables (:data:`TARGETS`):

* ``"slowest-timescale"``: an implied timescale of an MSM on the reference's states at the reference's
  lag (default the slowest);
* ``"mfpt"``: mean first-passage times between named basins (by default every ordered pair with at
  least :data:`MIN_TRANSITIONS` reference transitions);
* ``"acf"``: integrated autocorrelation times of coordinates (default all whose Sokal window the
  reference reaches).

A :class:`CalibrationTarget` measures the same observables on a model's trajectories and condenses them
into the matched quantity, the inverse-variance weighted mean log ratio

    f = sum_i w_i ln(m_i / r_i) / sum_i w_i,   w_i = 1 / s_i^2

(``s_i`` the reference's relative error of observable i), with a delete-one-group jackknife error over
walker groups (walkers are independent).  Times in ps.

References
----------
Efron & Stein, "The jackknife estimate of variance", Ann. Stat. 9, 586 (1981).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from latentlab.kinetics.analysis import KineticsResult, _jsonable, analyze, lag_frames
from latentlab.kinetics.basins import BasinSet, resolve_basins
from latentlab.kinetics.trajectories import Trajectories
from latentlab.validation import fail

TARGETS = ("slowest-timescale", "mfpt", "acf")

#: Reference transitions a first-passage pair needs to be a default calibration observable.
MIN_TRANSITIONS = 20

#: Walker groups of the jackknife.
JACKKNIFE_GROUPS = 8

#: Two-sided 95 % quantile of the standard normal distribution.
Z95 = 1.959963984540054


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

    @property
    def label(self) -> str:
        """The matched observable(s) in words, for messages."""
        return {"slowest-timescale": "implied timescale " + self.names[0],
                "mfpt": "MFPTs (" + ", ".join(self.names) + ")", "acf": "tau_int (" + ", ".join(self.names) + ")"}[self.kind]

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
            mfpt_pairs(pairs, bset.names, {})
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
            s = math.log(hi / lo) / (2 * Z95)
        else:
            s = 0.1
        return CalibrationTarget("slowest-timescale", [f"t{p + 1}"], np.array([t]), np.array([s]), np.ones(1), ref,
                                 lag_ps=ref.lag_ps, process=p)
    if target == "mfpt":
        if ref.basins is None or not ref.mfpt:
            fail("--basins", "no basins for first passages on these coordinates",
                 "define them, e.g. --basins \"A:phi<-2.1;B:-2.1<phi<0\" (see docs/kinetics.md)")
        chosen = mfpt_pairs(pairs, ref.basins.names, ref.mfpt)
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


def mfpt_pairs(pairs, names, mfpt: dict) -> list:
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
