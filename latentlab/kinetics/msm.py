"""Markov state models of Q on deeptime: discretisation, Bayesian MSMs, implied timescales, CK test, MFPTs.

* Embedding: a periodic coordinate theta becomes ``(cos theta, sin theta)``, every
  other coordinate is standardised, ``(x - mean) / std`` (mean and std of the data the
  clustering was fitted on), so that nm, rad and unit-less coordinates weigh alike.
* States: k-means (k-means++ start, fixed seed) on that embedding; frames go to the
  nearest centre.  A :class:`Discretizer` fitted on the reference is reused for a model,
  so both MSMs live on the same states.
* Counts: deeptime's ``effective`` counting (Noe 2015), which divides sliding-window
  counts by their statistical inefficiency so that Bayesian error bars are not too
  narrow; for more than 16 trajectories (walkers), where that is too slow, sliding
  counts divided by the lag (``sliding-effective``).  The reversible MSM lives on the
  largest strongly connected set.
* Posterior: reversible transition matrices sampled from the count matrix
  (Trendelkamp-Schroer et al. 2015, deeptime's sampler), with a seed.  Point
  estimates are the maximum-likelihood MSM's; intervals are the 2.5 / 97.5 %
  percentiles of the samples.  With few effective counts the sampled timescales lie
  systematically above the maximum-likelihood one (the interval may then miss the
  point estimate: a sign of too little data at that lag).
* Implied timescales ``t_i(tau) = -tau / ln |lambda_i(tau)|``.  A timescale shorter
  than the lag time is not resolved by that MSM.
* Chapman-Kolmogorov test on PCCA+ sets: ``P(k tau)`` predicted as ``T(tau)^k`` vs
  estimated at lag ``k tau``.
* MSM MFPT between basins: a state belongs to a basin when most of its frames do;
  hitting times from the stationary distribution on A's states, in steps of tau
  (so biased up by about tau / 2 against continuous time).

References
----------
Prinz et al., "Markov models of molecular kinetics: generation and validation",
J. Chem. Phys. 134, 174105 (2011).
Noe, "Statistical inefficiency of Markov model count matrices" (2015), deeptime's effective counting.
Trendelkamp-Schroer, Wu, Paul, Noe, "Estimation and uncertainty of reversible Markov
models", J. Chem. Phys. 143, 174101 (2015).
Hoffmann et al., "Deeptime: a Python library for machine learning dynamical models
from time series data", Mach. Learn.: Sci. Technol. 3, 015009 (2022).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from latentlab.validation import fail

#: Frames used to fit k-means at most (evenly strided over all trajectories); all frames are assigned.
MAX_FIT_FRAMES = 50_000

#: Up to this many trajectories deeptime's "effective" counting is used (it is slow for many walkers).
EFFECTIVE_MAX_TRAJECTORIES = 16


def _deeptime():
    """The deeptime module, or a clear error naming the install command."""
    try:
        import deeptime
        import deeptime.clustering  # noqa: F401
        import deeptime.markov.msm  # noqa: F401
    except ImportError:  # pragma: no cover - depends on the environment
        fail("deeptime", "is not installed", "pip install 'deeptime>=0.4.4'")
    return deeptime


@dataclass
class Discretizer:
    """Embedding of Q plus k-means centres: maps trajectories to integer state trajectories.

    Attributes
    ----------
    names : tuple of str
    periodic : tuple of bool
    offset, scale : np.ndarray, shape=(n_cg,)
        Standardisation of non-periodic coordinates (unused entries 0 and 1).
    centers : np.ndarray, shape=(n_clusters, n_embed)
        Cluster centres in the embedding.
    seed : int
    """

    names: tuple
    periodic: tuple
    offset: np.ndarray
    scale: np.ndarray
    centers: np.ndarray
    seed: int = 0

    @property
    def n_states(self) -> int:
        return int(self.centers.shape[0])

    @classmethod
    def fit(cls, trajectories, n_clusters: int = 50, seed: int = 0, max_fit_frames: int = MAX_FIT_FRAMES,
            max_iter: int = 100) -> "Discretizer":
        """k-means on the embedding of (an even subsample of) all frames.

        Parameters
        ----------
        trajectories : Trajectories
        n_clusters : int
            Number of states (capped at n_frames / 20).
        seed : int
        max_fit_frames : int
        max_iter : int
        """
        dt = _deeptime()
        q = trajectories.concatenated()
        if n_clusters < 2:
            fail("n_clusters", f"got {n_clusters}", "use at least 2 states")
        n_clusters = int(min(n_clusters, max(2, q.shape[0] // 20)))
        offset = np.where(trajectories.periodic, 0.0, q.mean(axis=0))
        scale = q.std(axis=0)
        scale = np.where(np.asarray(trajectories.periodic) | (scale <= 0), 1.0, scale)
        stride = max(1, int(math.ceil(q.shape[0] / max_fit_frames)))
        out = cls(tuple(trajectories.names), tuple(trajectories.periodic), offset, scale, np.zeros((0, 0)), int(seed))
        x = out.embed(q[::stride])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deeptime warns when max_iter ends before its tolerance; centres are fine
            km = dt.clustering.KMeans(n_clusters=n_clusters, max_iter=max_iter, init_strategy="kmeans++",
                                      fixed_seed=int(seed), n_jobs=1).fit(x).fetch_model()
        out.centers = np.asarray(km.cluster_centers, dtype=np.float64)
        return out

    def embed(self, q: np.ndarray) -> np.ndarray:
        """``(n, n_cg)`` Q -> ``(n, n_embed)``: (cos, sin) for periodic, standardised otherwise."""
        cols = []
        for i, p in enumerate(self.periodic):
            if p:
                cols.extend([np.cos(q[:, i]), np.sin(q[:, i])])
            else:
                cols.append((q[:, i] - self.offset[i]) / self.scale[i])
        return np.ascontiguousarray(np.stack(cols, axis=1))

    def assign(self, q: np.ndarray, chunk: int = 100_000) -> np.ndarray:
        """Nearest centre of every frame, ``(n,)`` int32."""
        out = np.empty(q.shape[0], dtype=np.int32)
        c2 = (self.centers ** 2).sum(axis=1)
        for a in range(0, q.shape[0], chunk):
            x = self.embed(q[a:a + chunk])
            d = c2[None, :] - 2.0 * x @ self.centers.T  # (n, k), |x|^2 dropped (same for every centre)
            out[a:a + chunk] = np.argmin(d, axis=1)
        return out

    def transform(self, trajectories) -> list[np.ndarray]:
        """State trajectories, one ``(n_frames_i,)`` int32 array per trajectory."""
        if tuple(trajectories.names) != self.names or tuple(trajectories.periodic) != self.periodic:
            fail("discretizer", f"was fitted on coordinates {list(self.names)} but got {list(trajectories.names)}",
                 "compare trajectories of the same map")
        return [self.assign(s) for s in trajectories.segments]


@dataclass
class MSMFit:
    """A maximum-likelihood MSM at one lag and its posterior samples.

    Attributes
    ----------
    lag : int
        Lag time in frames.
    prior : deeptime.markov.msm.MarkovStateModel or None
        None when no connected set with >= 2 states exists.
    samples : list of MarkovStateModel
    posterior : deeptime BayesianMSMPosterior or None
    active_fraction : float
        Fraction of the counts inside the active (largest connected) set.
    seeded : bool
        Whether the posterior sampler ran with a fixed seed.
    """

    lag: int
    prior: object
    samples: list
    posterior: object
    active_fraction: float
    seeded: bool

    @property
    def active_states(self) -> np.ndarray:
        return np.asarray(self.prior.count_model.state_symbols) if self.prior is not None else np.zeros(0, int)


def choose_count_mode(n_trajectories: int) -> str:
    """``"effective"`` for up to :data:`EFFECTIVE_MAX_TRAJECTORIES` trajectories, else ``"sliding-effective"``.

    deeptime's effective counting loops in Python over count-matrix elements and
    trajectories (about 50 us per element and trajectory): seconds per lag for one long
    reference, many minutes for 1024 walkers.  Sliding counts divided by the lag are
    then used; they are right for a Markovian discretisation and give narrower
    intervals than effective counts when the state trajectory is not Markovian at the lag.
    """
    return "effective" if int(n_trajectories) <= EFFECTIVE_MAX_TRAJECTORIES else "sliding-effective"


def fit_msm(dtrajs, lag: int, n_states: int, n_samples: int = 100, seed: int = 0,
            count_mode: str = "effective") -> MSMFit:
    """Reversible maximum-likelihood MSM plus Bayesian posterior at one lag (frames).

    Parameters
    ----------
    dtrajs : list of np.ndarray, each shape=(n_frames_i,), int
        Never joined: transitions are counted inside each array only.
    lag : int
        Frames.
    n_states : int
        Number of states of the discretisation.
    n_samples : int
        Posterior samples (0: maximum likelihood only).
    seed : int
    count_mode : {"effective", "sliding-effective"}
        deeptime's counting (:func:`choose_count_mode`).
    """
    dt = _deeptime()
    from deeptime.markov import TransitionCountEstimator
    from deeptime.markov.msm import MarkovStateModel, MaximumLikelihoodMSM

    lag = int(lag)
    usable = [d for d in dtrajs if len(d) > lag]
    if not usable:
        return MSMFit(lag, None, [], None, 0.0, True)
    if count_mode not in ("effective", "sliding-effective"):
        fail("count_mode", f"got {count_mode!r}", "use 'effective' or 'sliding-effective'")
    counts = TransitionCountEstimator(lag, count_mode, n_states=int(n_states)).fit(usable).fetch_model()
    total = float(counts.count_matrix.sum())
    largest = counts.submodel_largest(directed=True)
    if largest.n_states < 2 or total <= 0:
        return MSMFit(lag, None, [], None, 0.0, True)
    frac = float(largest.count_matrix.sum()) / total
    prior = MaximumLikelihoodMSM(reversible=True).fit(largest).fetch_model()
    samples, seeded, posterior = [], True, None
    if n_samples > 0:
        try:
            from deeptime.markov.tools.estimation.dense.tmat_sampling.tmatrix_sampler import TransitionMatrixSampler

            sampler = TransitionMatrixSampler(np.asarray(largest.count_matrix, dtype=np.float64), reversible=True,
                                              P0=prior.transition_matrix, n_steps=int(math.sqrt(largest.n_states)),
                                              seed=int(seed))
            ps, pis = sampler.sample(nsamples=int(n_samples), return_statdist=True)
            samples = [MarkovStateModel(p, stationary_distribution=pi, reversible=True, count_model=largest,
                                        transition_matrix_tolerance=prior.transition_matrix_tolerance)
                       for p, pi in zip(ps, pis)]
        except (ImportError, TypeError):  # pragma: no cover - other deeptime versions: public, unseeded path
            seeded = False
            samples = dt.markov.msm.BayesianMSM(n_samples=int(n_samples)).sample(prior, int(n_samples))
        posterior = dt.markov.msm.BayesianMSMPosterior(prior=prior, samples=samples)
    return MSMFit(lag, prior, samples, posterior, frac, seeded)


def timescales(fit: MSMFit, k: int, dt_ps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Implied timescales (ps) of one fit: MLE ``(k,)``, interval ``(k, 2)``, samples ``(n_samples, k)``.

    Missing timescales (fewer states than ``k + 1``) are NaN.
    """
    est = np.full(k, np.nan)
    interval = np.full((k, 2), np.nan)
    samples = np.full((len(fit.samples), k), np.nan)
    if fit.prior is None:
        return est, interval, samples
    m = min(k, fit.prior.n_states - 1)
    if m <= 0:
        return est, interval, samples
    est[:m] = _ts(fit.prior, m) * dt_ps
    if fit.samples:
        samples[:, :m] = np.array([_ts(s, m) for s in fit.samples]) * dt_ps
        # an infinite sample (a second unit eigenvalue) is kept as such: no interpolation across it (inf - inf)
        method = "linear" if np.isfinite(samples[:, :m]).all() else "inverted_cdf"
        interval[:m] = np.percentile(samples[:, :m], [2.5, 97.5], axis=0, method=method).T
    return est, interval, samples


def _ts(model, m: int) -> np.ndarray:
    """deeptime's implied timescales ``-tau / ln |lambda|``, in frames (inf for a second eigenvalue of
    magnitude one: a posterior sample whose states split into two that never exchange at this lag)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Multiple eigenvalues with magnitude one")
        return np.asarray(model.timescales(m), dtype=np.float64)


def ck_test(fits: list, n_sets: int, dt_ps: float, basin_fractions: np.ndarray | None = None,
            basin_names=None) -> dict | None:
    """Chapman-Kolmogorov test on PCCA+ sets of the first fit, against the fits at longer lags.

    Parameters
    ----------
    fits : list of MSMFit
        ``fits[0]`` is the tested model (lag tau); the others are at multiples of tau.
    n_sets : int
        Metastable sets (PCCA+).
    dt_ps : float
    basin_fractions : np.ndarray, shape=(n_states, n_basins), optional
        Fraction of each state's frames in each basin, to say which basin a set is.
    basin_names : list of str, optional

    Returns
    -------
    dict or None
        ``lags_ps``, ``predicted`` / ``estimated`` (n_lags, n_sets, n_sets) set-to-set transition
        probabilities, their 95 % intervals, ``max_abs_deviation``, ``fraction_within_95``
        (share of entries where the difference is inside the combined 95 % band), ``max_z``
        (largest difference in units of the combined posterior standard deviation), and
        ``sets_in_basins`` (per set: stationary-weighted share of its states in each basin).
    """
    from deeptime.util.validation import ck_test as dt_ck

    test = fits[0]
    if test.prior is None or test.prior.n_states < n_sets or test.posterior is None:
        return None
    others = [f for f in fits[1:] if f.prior is not None and f.posterior is not None]
    if not others:
        return None
    try:
        pcca = test.prior.pcca(int(n_sets))
        from deeptime.markov._observables import MembershipsObservable  # deeptime's own CK observable

        obs = MembershipsObservable(test.posterior, pcca, initial_distribution=test.prior.stationary_distribution)
        res = dt_ck([f.posterior for f in others], obs, test_model=test.posterior, include_lag0=False, err_est=True)
    except (ValueError, np.linalg.LinAlgError, ImportError, RuntimeError) as err:
        return {"error": f"{type(err).__name__}: {err}"}
    pred = np.real(np.asarray(res.predictions))  # (L, n, n), lag 0 excluded
    est = np.real(np.asarray(res.estimates))
    pred_s = np.real(np.asarray(res.predictions_samples))  # (L, S, n, n)
    # deeptime (0.4-0.5) appends the lag-0 identity to each list of estimate samples (a for-else in
    # its ck_test); keep the posterior samples only.
    est_s = np.real(np.asarray([np.asarray(e)[:len(f.samples)] for e, f in zip(res.estimates_samples, others)]))
    p_lo, p_hi = np.percentile(pred_s, [2.5, 97.5], axis=1)
    e_lo, e_hi = np.percentile(est_s, [2.5, 97.5], axis=1)
    sd = np.sqrt(pred_s.std(axis=1) ** 2 + est_s.std(axis=1) ** 2)
    within = np.abs(pred - est) <= 1.96 * np.maximum(sd, 1e-12)
    lags = np.asarray(res.lagtimes, dtype=float)
    sets_in_basins = None
    if basin_fractions is not None and basin_names:
        act = test.active_states
        mem = np.asarray(pcca.memberships)  # (n_active, n_sets)
        w = mem * test.prior.stationary_distribution[:, None]
        w = w / w.sum(axis=0, keepdims=True)
        frac = w.T @ basin_fractions[act]  # (n_sets, n_basins)
        sets_in_basins = [{b: float(v) for b, v in zip(basin_names, row)} for row in frac]
    return {
        "lags_ps": (lags * dt_ps).tolist(), "n_sets": int(n_sets),
        "predicted": pred.tolist(), "predicted_interval": np.stack([p_lo, p_hi], axis=-1).tolist(),
        "estimated": est.tolist(), "estimated_interval": np.stack([e_lo, e_hi], axis=-1).tolist(),
        "max_abs_deviation": float(np.max(np.abs(pred - est))), "fraction_within_95": float(within.mean()),
        "max_z": float(np.max(np.abs(pred - est) / np.maximum(sd, 1e-12))),
        "sets_in_basins": sets_in_basins,
    }


def basin_state_fractions(dtrajs, masks: dict, n_states: int) -> np.ndarray:
    """``(n_states, n_basins)``: fraction of each state's frames inside each basin."""
    counts = np.zeros(n_states)
    inside = np.zeros((n_states, len(masks)))
    for k, d in enumerate(dtrajs):
        counts += np.bincount(d, minlength=n_states)
        for j, name in enumerate(masks):
            inside[:, j] += np.bincount(d, weights=masks[name][k].astype(float), minlength=n_states)
    return inside / np.maximum(counts, 1)[:, None]


def msm_mfpt(fit: MSMFit, fractions: np.ndarray, basin_names, dt_ps: float, pairs=None) -> dict:
    """MFPTs between basins from an MSM and its posterior samples.

    Parameters
    ----------
    fit : MSMFit
    fractions : np.ndarray, shape=(n_states, n_basins)
        :func:`basin_state_fractions`; a state belongs to a basin where the fraction is > 1/2.
    basin_names : list of str
    dt_ps : float
    pairs : list of (str, str), optional

    Returns
    -------
    dict
        ``{"A->B": {"mfpt_ps", "interval_ps", "stderr_ps"}}`` (None where A or B has no active state).
    """
    names = list(basin_names)
    if pairs is None:
        pairs = [(a, b) for a in names for b in names if a != b]
    out = {}
    if fit.prior is None:
        return {f"{a}->{b}": {"mfpt_ps": None, "interval_ps": None, "stderr_ps": None} for a, b in pairs}
    act = fit.active_states
    member = fractions[act] > 0.5  # (n_active, n_basins)
    for a, b in pairs:
        ib, ia = names.index(b), names.index(a)
        tb = np.nonzero(member[:, ib])[0]
        sa = np.nonzero(member[:, ia] & ~member[:, ib])[0]
        key = f"{a}->{b}"
        if tb.size == 0 or sa.size == 0:
            out[key] = {"mfpt_ps": None, "interval_ps": None, "stderr_ps": None}
            continue
        est = float(fit.prior.mfpt(sa, tb)) * dt_ps
        interval = stderr = None
        if fit.samples:
            s = np.array([float(m.mfpt(sa, tb)) for m in fit.samples]) * dt_ps
            interval = np.percentile(s, [2.5, 97.5]).tolist()
            stderr = float(s.std(ddof=1))
        out[key] = {"mfpt_ps": est, "interval_ps": interval, "stderr_ps": stderr}
    return out


def process_basins(fit: MSMFit, fractions: np.ndarray, basin_names, k: int) -> list:
    """Which basins each of the ``k`` slowest processes moves between.

    For each right eigenvector ``r_i`` (i = 1..k) of the MSM, the correlation, weighted by the
    stationary distribution, between ``r_i`` and each basin's share of the states: close to
    +-1 when the process is the exchange of that basin with the rest.

    Returns
    -------
    list of dict
        ``[{basin: correlation}]``, one per timescale (slowest first).
    """
    if fit.prior is None or fractions is None:
        return []
    m = min(int(k), fit.prior.n_states - 1)
    if m <= 0:
        return []
    pi = fit.prior.stationary_distribution
    vecs = np.real(fit.prior.eigenvectors_right(m + 1))[:, 1:m + 1]  # (n_active, m)
    f = fractions[fit.active_states]  # (n_active, n_basins)

    def wcorr(x, y):
        x = x - pi @ x
        y = y - pi @ y
        den = math.sqrt(float(pi @ (x * x)) * float(pi @ (y * y)))
        return float(pi @ (x * y)) / den if den > 0 else 0.0

    return [{b: wcorr(vecs[:, i], f[:, j]) for j, b in enumerate(basin_names)} for i in range(m)]
