"""Kinetics: exact answers (OU process, rotational diffusion, Markov chains, telegraph process),
independence of walkers and replicas, basin specs and the ``latentlab kinetics`` CLI.

Tolerances are computed: Sokal's standard error of tau_int, Bartlett's variance of the ACF,
posterior standard deviations of the Bayesian MSM, and exact hitting-time variances.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from latentlab.kinetics import Trajectories, analyze, autocorrelation, compare, mfpt_direct, parse_basins
from latentlab.kinetics.acf import acf_analysis

Z = 4.0  # z-score bound of every statistical check


# ---------------------------------------------------------------------- generators
def ou_walkers(k: float, dt: float, n_steps: int, n_walkers: int, seed: int) -> np.ndarray:
    """Exact OU samples (unit variance, rho(t) = exp(-k t)), shape (n_steps, n_walkers)."""
    rng = np.random.default_rng(seed)
    a = math.exp(-k * dt)
    x = np.empty((n_steps, n_walkers))
    x[0] = rng.standard_normal(n_walkers)
    noise = rng.standard_normal((n_steps, n_walkers)) * math.sqrt(1 - a * a)
    for i in range(1, n_steps):
        x[i] = a * x[i - 1] + noise[i]
    return x


def markov_chain(T: np.ndarray, n_steps: int, n_traj: int, seed: int) -> np.ndarray:
    """State trajectories of a Markov chain started from its stationary distribution, (n_steps, n_traj)."""
    rng = np.random.default_rng(seed)
    w, v = np.linalg.eig(T.T)
    pi = np.real(v[:, np.argmax(np.real(w))])
    pi /= pi.sum()
    cum = np.cumsum(T, axis=1)
    s = np.empty((n_steps, n_traj), dtype=int)
    s[0] = rng.choice(len(pi), size=n_traj, p=pi)
    u = rng.random((n_steps, n_traj))
    for i in range(1, n_steps):
        s[i] = (u[i][:, None] > cum[s[i - 1]]).sum(axis=1)
    return s


def hitting_moments(T: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and second moment of the hitting time of ``target`` from every state (steps)."""
    n = len(T)
    keep = [i for i in range(n) if i != target]
    sub = T[np.ix_(keep, keep)]
    m = np.zeros(n)
    m[keep] = np.linalg.solve(np.eye(n - 1) - sub, np.ones(n - 1))
    # E[tau_i^2] = sum_j T_ij E[(1 + tau_j)^2], tau_target = 0
    s = np.zeros(n)
    rhs = 1.0 + 2.0 * (T[np.ix_(keep, range(n))] @ m)
    s[keep] = np.linalg.solve(np.eye(n - 1) - sub, rhs)
    return m, s


#: Reversible 3-state chain, stationary (0.5, 0.2, 0.3).
T3 = np.array([[0.90, 0.08, 0.02],
               [0.20, 0.70, 0.10],
               [0.01 / 0.3, 0.02 / 0.3, 1.0 - 0.03 / 0.3]])


# ---------------------------------------------------------------------- autocorrelation
def test_ou_tau_int_is_one_over_k():
    k, dt = 0.1, 1.0
    x = ou_walkers(k, dt, 5000, 20, seed=1)
    tr = Trajectories.from_arrays(x[:, :, None], dt, names=["x"])  # (n_records, n_walkers, n_cg)
    assert tr.n_trajectories == 20
    res = acf_analysis(tr)
    tau, se = res["tau_int_ps"]["x"], res["tau_int_stderr_ps"]["x"]
    exact_sum = 0.5 * dt / math.tanh(0.5 * k * dt)  # trapezoidal sum of exp(-k t): (dt/2) coth(k dt/2)
    assert abs(exact_sum - 1.0 / k) < 1e-3 / k  # = (1/k)(1 + (k dt)^2/12 + ...)
    assert abs(tau - exact_sum) < Z * se, (tau, exact_sum, se)
    assert se < 0.1 * tau  # the test has power
    # The ACF itself, against exp(-k t) with Bartlett's variance for an AR(1) process.
    rho = res["acf"]["x"]
    a = math.exp(-k * dt)
    n = tr.n_frames
    for t in (1, 5, 10, 20):
        var = ((1 + a * a) * (1 - a ** (2 * t)) / (1 - a * a) - 2 * t * a ** (2 * t)) / n
        assert abs(rho[t] - a ** t) < Z * math.sqrt(var), (t, rho[t], a ** t)


def test_periodic_acf_of_rotational_diffusion_is_exp_minus_dt():
    """Free diffusion on the circle: <exp(i(theta(t) - theta(0)))> = exp(-D t) exactly, so tau_int = 1/D.
    Treated as a line, the wrapped angle (a sawtooth) has tau_int = pi^2 / (15 D) instead."""
    D, dt, n_steps, n_walkers = 0.05, 1.0, 4000, 100
    rng = np.random.default_rng(2)
    theta = rng.uniform(-np.pi, np.pi, n_walkers) + np.cumsum(rng.standard_normal((n_steps, n_walkers))
                                                             * math.sqrt(2 * D * dt), axis=0)
    theta = np.pi - np.mod(np.pi - theta, 2 * np.pi)
    exact = 0.5 * dt / math.tanh(0.5 * D * dt)
    periodic = acf_analysis(Trajectories.from_arrays(theta[:, :, None], dt, names=["phi"], periodic=[True]))
    tau, se = periodic["tau_int_ps"]["phi"], periodic["tau_int_stderr_ps"]["phi"]
    assert abs(tau - exact) < Z * se, (tau, exact, se)
    line = acf_analysis(Trajectories.from_arrays(theta[:, :, None], dt, names=["x"], periodic=[False]))
    sawtooth = math.pi ** 2 / (15 * D)  # (6/pi^2) sum_n exp(-n^2 D t)/n^2 integrated
    tau_l, se_l = line["tau_int_ps"]["x"], line["tau_int_stderr_ps"]["x"]
    assert abs(tau_l - sawtooth) < Z * se_l, (tau_l, sawtooth, se_l)
    assert abs(tau - tau_l) > Z * math.hypot(se, se_l)  # the periodic treatment matters


def test_acf_agrees_with_dynamics_statistics_for_one_trajectory():
    """Same estimator as latentlab.dynamics.statistics up to its 1/n (not 1/(n - t)) normalisation."""
    stats = pytest.importorskip("latentlab.dynamics.statistics")
    if not hasattr(stats, "autocorrelation"):
        pytest.skip("latentlab.dynamics.statistics.autocorrelation is gone")
    x = ou_walkers(0.3, 1.0, 700, 1, seed=3)[:, 0]
    mine, pairs = autocorrelation([x])
    theirs = stats.autocorrelation(x[:, None])
    n = x.size
    t = np.arange(n)
    np.testing.assert_allclose(mine * (n - t) / n, theirs, atol=1e-12)
    np.testing.assert_array_equal(pairs, n - t)


def test_autocorrelation_never_pairs_frames_of_two_walkers():
    """Two walkers of different lengths: pairs at lag t are sum(n_w - t) over the walkers, never more."""
    a, b = np.random.default_rng(4).standard_normal(50), np.random.default_rng(5).standard_normal(30)
    _, pairs = autocorrelation([a, b], max_lag=60)
    t = np.arange(50)
    np.testing.assert_array_equal(pairs, np.maximum(50 - t, 0) + np.maximum(30 - t, 0))


# ---------------------------------------------------------------------- MSM and first passages
@pytest.mark.parametrize("count_mode", ["auto", "effective"])
def test_markov_chain_timescales_and_mfpts_match_exact_answers(count_mode):
    dt = 0.5
    s = markov_chain(T3, 5000, 20, seed=6)
    q = s[:, :, None] + 0.01 * np.random.default_rng(7).standard_normal(s.shape)[:, :, None]
    tr = Trajectories.from_arrays(q, dt, names=["x"])
    res = analyze(tr, basins="A: x<0.5; B: x>1.5", n_clusters=3, lag_ps=dt, lags_ps=[dt, 2 * dt],
                  n_samples=200, ck_sets=0, min_blocks=100, seed=0, count_mode=count_mode)
    # 20 trajectories: "auto" picks sliding counts / lag (effective counting is slow for many walkers).
    assert res.msm_info["count_mode"] == ("sliding-effective" if count_mode == "auto" else "effective")
    lam = np.sort(np.real(np.linalg.eigvals(T3)))[::-1][1:]
    for lag_frames, row in zip((1, 2), (0, 1)):
        exact = -lag_frames * dt / np.log(lam ** lag_frames)  # = -dt / ln(lambda) at every lag
        est = res.its_ps[row, :2]
        sd = (res.its_interval_ps[row, :2, 1] - res.its_interval_ps[row, :2, 0]) / 3.92
        assert np.all(np.abs(est - exact) < Z * sd), (est, exact, sd)
    np.testing.assert_allclose(res.implied_timescales_ps[:2], res.its_ps[0, :2])
    # MFPTs 0 -> 2 and 2 -> 0 from the linear equations; the direct estimate's error bar vs the
    # exact variance of i.i.d. passages.
    for a, b, src, dst in (("A", "B", 0, 2), ("B", "A", 2, 0)):
        m, s2 = hitting_moments(T3, dst)
        exact, sd1 = m[src] * dt, math.sqrt(s2[src] - m[src] ** 2) * dt
        d = res.mfpt[f"{a}->{b}"]
        se_exact = sd1 / math.sqrt(d["transitions"])
        assert abs(d["mfpt_ps"] - exact) < Z * se_exact, (a, b, d, exact)
        # Relative error of a block-bootstrap SE from n blocks is ~ 1/sqrt(2 n).
        assert abs(d["stderr_ps"] / se_exact - 1.0) < Z / math.sqrt(2 * d["n_blocks"]), (d, se_exact)
        msm = res.mfpt_msm[f"{a}->{b}"]
        assert abs(msm["mfpt_ps"] - exact) < Z * msm["stderr_ps"], (msm, exact)


def test_chapman_kolmogorov_passes_for_markov_and_fails_for_hidden_memory():
    """Observed Markov chain: predictions T(tau)^k agree with the estimates at k tau.  Two hidden
    states share one Q value and leave it at 0.5 or 0.005 per step: the projected dynamics has memory."""
    e1, e2 = 0.5, 0.005
    T_hidden = np.array([[1 - e1, 0.0, e1], [0.0, 1 - e2, e2], [e1, e2, 1 - e1 - e2]])
    T_markov = T3[:2, :2] / T3[:2, :2].sum(axis=1, keepdims=True)
    rng = np.random.default_rng(18)
    for T, level, markov in ((T_markov, [0.0, 1.0], True), (T_hidden, [0.0, 0.0, 1.0], False)):
        s = markov_chain(T, 4000, 10, seed=19)
        q = np.asarray(level)[s][:, :, None] + 0.05 * rng.standard_normal(s.shape)[:, :, None]
        res = analyze(Trajectories.from_arrays(q, 1.0, names=["x"]), basins=None, n_clusters=2, lag_ps=1.0,
                      lags_ps=[1.0], n_samples=100, ck_sets=2, ck_multiples=5, seed=1)
        ck = res.ck
        assert ck["lags_ps"] == [2.0, 3.0, 4.0, 5.0] and np.asarray(ck["predicted"]).shape == (4, 2, 2)
        if markov:
            assert ck["max_z"] < Z, ck
        else:
            assert ck["max_z"] > 2 * Z, ck


def test_telegraph_process_mfpt():
    """Continuous-time two-state process (rates k_AB, k_BA) sampled every dt: the counted MFPT is
    dt / P_AB(dt) with P_AB = k_AB / k (1 - exp(-k dt)), k = k_AB + k_BA, -> 1/k_AB as dt -> 0."""
    k_ab, k_ba, dt, total = 0.02, 0.05, 1.0, 200_000.0
    rng = np.random.default_rng(8)
    trajs = []
    n_dwell = int(3 * total * (k_ab + k_ba))  # enough alternating dwell times to cover `total`
    for _ in range(10):
        first = int(rng.random() < k_ab / (k_ab + k_ba))  # stationary start: P(B) = k_AB / k
        states = (first + np.arange(n_dwell)) % 2
        dwell = rng.exponential(1.0 / np.where(states == 0, k_ab, k_ba))
        switches = np.cumsum(dwell)
        assert switches[-1] > total
        grid = np.arange(0.0, total, dt)
        trajs.append(states[np.searchsorted(switches, grid, side="right")].astype(float))
    tr = Trajectories.from_arrays(trajs, dt, names=["x"])
    res = analyze(tr, basins="A: x<0.5; B: x>0.5", msm=False)
    k = k_ab + k_ba
    for key, rate in (("A->B", k_ab), ("B->A", k_ba)):
        p = rate / k * (1 - math.exp(-k * dt))
        exact = dt / p
        d = res.mfpt[key]
        assert abs(d["mfpt_ps"] - exact) < Z * d["stderr_ps"], (key, d, exact)
        assert abs(exact - 1 / rate) < 0.05 / rate  # the frame spacing's bias, known in closed form
    # tau_int of the telegraph signal: exp(-k t) correlation, area 1/k.
    assert abs(res.tau_int_ps["x"] - 0.5 * dt / math.tanh(0.5 * k * dt)) < Z * res.acf["tau_int_stderr_ps"]["x"]


def test_mfpt_direct_counts_history_and_censoring():
    """Hand-counted example: A A . B B . A . B with dt = 2: A->B passages of 3 and 2 intervals."""
    a = np.array([1, 1, 0, 0, 0, 0, 1, 0, 0], bool)
    b = np.array([0, 0, 0, 1, 1, 0, 0, 0, 1], bool)
    out = mfpt_direct({"A": [a], "B": [b]}, 2.0, min_blocks=1, n_bootstrap=0)
    assert out["A->B"]["transitions"] == 2 and out["A->B"]["mfpt_ps"] == pytest.approx(2.0 * 5 / 2)
    assert out["B->A"]["transitions"] == 1 and out["B->A"]["mfpt_ps"] == pytest.approx(2.0 * 3 / 1)


# ---------------------------------------------------------------------- independence
def test_walkers_are_never_joined():
    """Walker 0 stays in A, walker 1 in B: no transition.  Joining them (concatenated, or the
    (n_records, n_walkers) layout flattened) would count transitions."""
    rng = np.random.default_rng(9)
    n = 400
    q = np.stack([0.0 + 0.05 * rng.standard_normal(n), 1.0 + 0.05 * rng.standard_normal(n)], axis=1)[:, :, None]
    spec = "A: x<0.5; B: x>0.5"
    res = analyze(Trajectories.from_arrays(q, 1.0, names=["x"]), basins=spec, n_clusters=4, n_samples=10, ck_sets=0,
                  lag_ps=1.0, lags_ps=[1.0])
    assert res.mfpt["A->B"]["transitions"] == 0 and res.mfpt["A->B"]["mfpt_ps"] is None
    assert res.mfpt["B->A"]["transitions"] == 0
    # The MSM sees two disconnected halves: its active set holds one walker's states only.
    assert res.msm_info["states_active"] <= 2 and res.msm_info["active_count_fraction"] < 0.75
    joined = analyze(Trajectories.from_arrays(np.concatenate([q[:, 0], q[:, 1]]), 1.0, names=["x"]),
                     basins=spec, msm=False)
    assert joined.mfpt["A->B"]["transitions"] == 1
    flat = analyze(Trajectories.from_arrays(q.reshape(-1, 1), 1.0, names=["x"]), basins=spec, msm=False)
    assert flat.mfpt["A->B"]["transitions"] >= n - 1


def test_dataset_replicas_and_time_gaps_split_trajectories():
    from latentlab.data.dataset import Dataset

    rng = np.random.default_rng(10)
    n = 120
    # Atom 1 sits 0.3 nm (basin A) or 0.5 nm (basin B) from atom 0; first replica A, second B.
    d = np.concatenate([np.full(60, 0.3), np.full(60, 0.5)]) + 0.005 * rng.standard_normal(n)
    pos = np.zeros((n, 2, 3))
    pos[:, 1, 0] = d
    time = np.concatenate([np.arange(60) * 2.0, 1000.0 + np.arange(60) * 2.0])
    ds = Dataset.from_arrays(pos, masses=[12.0, 12.0], temperature=300.0, time=time, check_units=False)
    tr = Trajectories.from_dataset(ds, "distances:0-1")
    assert tr.n_trajectories == 2 and tr.dt_ps == pytest.approx(2.0)
    assert any("jumps" in w for w in tr.warnings)
    res = analyze(tr, basins="A: d<0.4; B: d>0.4".replace("d", tr.names[0]), msm=False)
    key = next(iter(res.mfpt))
    assert res.mfpt[key]["transitions"] == 0
    ds2 = Dataset.from_arrays(pos, masses=[12.0, 12.0], temperature=300.0, dt=2.0, check_units=False,
                              replica=np.repeat([0, 1], 60))
    tr2 = Trajectories.from_dataset(ds2, "distances:0-1")
    assert tr2.n_trajectories == 2 and [len(s) for s in tr2.segments] == [60, 60]


def test_sim_file_walkers_restarts_and_burn_in(tmp_path):
    from latentlab.simulation import save_simulation

    q = np.random.default_rng(11).standard_normal((100, 3, 2)).astype(np.float32)
    path = str(tmp_path / "run.npz")
    meta = {"names": ["phi", "psi"], "periodic": [True, True], "units": ["rad", "rad"], "dt": 0.002,
            "record_every": 250, "map": "dihedrals:phi-psi", "dataset": "alanine-dipeptide"}
    save_simulation(path, q, 0.5 * np.arange(1, 101), meta, restarts=np.array([[60, 1]]))
    tr = Trajectories.from_simulation(path, burn_in=0.2)
    assert tr.dt_ps == pytest.approx(0.5) and tr.names == ["phi", "psi"] and tr.periodic == [True, True]
    # walkers 0 and 2 whole after burn-in (80 records); walker 1 cut at record 60 -> 40 + 40
    assert sorted(len(s) for s in tr.segments) == [40, 40, 80, 80]
    np.testing.assert_allclose(tr.segments[0][0], q[20, 0], atol=1e-6)


def test_input_arrays_are_copied_and_read_only():
    x = np.random.default_rng(12).standard_normal((50, 1))
    tr = Trajectories.from_arrays([x], 1.0)
    x[:] = 0.0
    assert not np.all(tr.segments[0] == 0.0)
    with pytest.raises(ValueError):
        tr.segments[0][0, 0] = 1.0


# ---------------------------------------------------------------------- basins
def _tr(names, periodic, units=None):
    return Trajectories.from_arrays(np.zeros((3, len(names))), 1.0, names=names, periodic=periodic, units=units)


def test_basin_spec_grammar():
    tr = _tr(["phi", "psi"], [True, True])
    b = parse_basins("C5: phi<-120deg; C7eq: -120deg<phi<0; wrap: 150deg<phi<-150deg; R: phi<0, -90deg<psi<-10deg", tr)
    assert b.names == ["C5", "C7eq", "wrap", "R"]
    q = np.radians([[-150, 0], [-80, -50], [179, 0], [-179, 0], [100, 0], [-80, -100]])
    inside = b.contains(q, tr)
    np.testing.assert_array_equal(inside["C5"], [1, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(inside["C7eq"], [0, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(inside["wrap"], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(inside["R"], [0, 1, 0, 0, 0, 0])
    tri = _tr(["r1", "r2", "cos"], [False] * 3, ["nm", "nm", "1"])
    b2 = parse_basins("folded: r13<0.6; open: r13>=0.8", tri)
    pts = np.array([[0.5, 0.5, 0.5], [0.5, 0.5, -0.9]])  # r13 = 0.5 and 0.975
    assert list(b2.contains(pts, tri)["folded"]) == [True, False]
    assert list(b2.contains(pts, tri)["open"]) == [False, True]


def test_builtin_basins_of_the_reference_data():
    """chignolin: r13 of its triangle map is the CA1-CA10 distance of the data; alanine: phi thresholds."""
    from latentlab.data import load
    from latentlab.kinetics.basins import coordinate_values, resolve_basins

    ds = load("chignolin")
    tr = Trajectories.from_dataset(ds)
    basins = resolve_basins("auto", tr)
    assert basins.label == "chignolin" and basins.names == ["folded", "unfolded"]
    r13 = coordinate_values(tr.segments[0], tr.names)["r13"]
    ca = np.linalg.norm(ds.positions[:, 0] - ds.positions[:, 9], axis=1)
    np.testing.assert_allclose(r13, ca, atol=1e-5)  # float32 positions
    inside = basins.masks(tr)
    np.testing.assert_array_equal(inside["folded"][0], ca < 0.60)
    ala = Trajectories.from_dataset(load("alanine-dipeptide"))
    b = resolve_basins("auto", ala)
    assert b.label == "alanine-dipeptide" and b.names == ["C5", "C7eq", "alpha_R", "phi>0"]
    phi = np.degrees(ala.segments[0][:, 0])
    m = b.masks(ala)
    np.testing.assert_array_equal(m["C5"][0], phi < -120)
    np.testing.assert_array_equal(m["C7eq"][0], (phi > -120) & (phi < 0))
    assert resolve_basins("auto", _tr(["x"], [False])) is None and resolve_basins("none", ala) is None


@pytest.mark.parametrize("spec, match", [
    ("A phi<0; B: phi>0", "has no ':'"),
    ("A: chi<0; B: phi>0", "unknown coordinate 'chi'"),
    ("A: phi<0", "at least two"),
    ("A: phi<0; A: phi>0", "defined twice"),
    ("A: 0<phi>1; B: phi>0", "different directions"),
    ("A: phi<zero; B: phi>0", "unknown coordinate|not a number"),
    ("A: phi<200deg; B: phi>0", "outside"),
    ("A: 1<d<0.5; B: d>1", "range is empty"),
    ("A: d<3deg; B: d>1", "not an angle"),
])
def test_bad_basin_specs_are_refused_clearly(spec, match):
    tr = _tr(["phi", "d"], [True, False], ["rad", "nm"])
    with pytest.raises(ValueError, match=match):
        parse_basins(spec, tr)


# ---------------------------------------------------------------------- comparison and CLI
def _telegraph_phi(n_records, n_walkers, seed, p_stay=(0.8, 0.93)):
    """phi/psi walkers hopping between C5 (-150 deg) and C7eq (-75 deg)."""
    T = np.array([[p_stay[0], 1 - p_stay[0]], [1 - p_stay[1], p_stay[1]]])
    s = markov_chain(T, n_records, n_walkers, seed)
    rng = np.random.default_rng(seed + 100)
    phi = np.radians(np.where(s == 0, -150.0, -75.0)) + 0.15 * rng.standard_normal(s.shape)
    psi = np.radians(150.0) + 0.3 * rng.standard_normal(s.shape)
    return np.stack([phi, psi], axis=-1)


def _write_sim(path, q, dt_record):
    from latentlab.simulation import save_simulation

    meta = {"names": ["phi", "psi"], "periodic": [True, True], "units": ["rad", "rad"], "dt": dt_record,
            "record_every": 1, "map": "dihedrals:phi-psi", "dataset": "alanine-dipeptide"}
    return save_simulation(str(path), q, dt_record * np.arange(1, q.shape[0] + 1), meta)


def test_compare_strides_the_finer_trajectory_and_shares_states():
    model = Trajectories.from_arrays(_telegraph_phi(800, 4, 13), 1.0, names=["phi", "psi"], periodic=[True, True])
    ref = Trajectories.from_arrays(_telegraph_phi(400, 2, 14), 2.0, names=["phi", "psi"], periodic=[True, True])
    cmp = compare(model, ref, n_clusters=6, n_samples=20, ck_sets=0, lags_ps=[2.0, 4.0])
    assert cmp.analysis_dt_ps == pytest.approx(2.0)
    assert cmp.model.trajectories.dt_ps == pytest.approx(2.0) and cmp.model.trajectories.lengths.max() == 400
    assert cmp.model.discretizer is cmp.reference.discretizer
    assert cmp.model.lag_ps == cmp.reference.lag_ps
    assert set(cmp.model.mfpt) == set(cmp.reference.mfpt) and "C5->C7eq" in cmp.model.mfpt
    bad = Trajectories.from_arrays(np.zeros((10, 1)), 1.0, names=["x"])
    with pytest.raises(ValueError, match="coordinates"):
        compare(bad, ref)
    # a model run shorter than one of the reference's frame spacings: named as such, not as a bad stride
    short = Trajectories.from_arrays(_telegraph_phi(30, 4, 15), 0.1, names=["phi", "psi"], periodic=[True, True])
    with pytest.raises(ValueError, match=r"model: its longest trajectory spans 2.9 ps, less than one frame spacing "
                                         r"of the reference \(4 ps\).*Fix: simulate each walker for many"):
        compare(short, Trajectories.from_arrays(_telegraph_phi(400, 2, 14), 4.0, names=["phi", "psi"],
                                                periodic=[True, True]))


CONTRACT = ("lag_ps", "implied_timescales_ps", "implied_timescales_interval_ps", "tau_int_ps", "mfpt_ps",
            "mfpt_stderr_ps")


def _check_contract(d, names):
    for key in CONTRACT:
        assert key in d, key
    its, iv = d["implied_timescales_ps"], d["implied_timescales_interval_ps"]
    assert len(its) == len(iv) and all(len(x) == 2 for x in iv)
    finite = [t for t in its if t is not None]
    assert finite == sorted(finite, reverse=True)  # slowest first
    assert set(d["tau_int_ps"]) == set(names)
    assert set(d["mfpt_ps"]) == set(d["mfpt_stderr_ps"]) and "C5->C7eq" in d["mfpt_ps"]
    assert d["lag_ps"] > 0


def test_cli_json_keys_and_plot(tmp_path, capsys):
    from latentlab.cli import main

    sim = _write_sim(tmp_path / "model.npz", _telegraph_phi(600, 4, 15), 1.0)
    ref = _write_sim(tmp_path / "ref.npz", _telegraph_phi(1200, 2, 16), 1.0)
    common = ["--samples", "20", "--clusters", "8", "--json"]
    assert main(["kinetics", sim, *common]) == 0
    d = json.loads(capsys.readouterr().out)
    _check_contract(d, ["phi", "psi"])
    png = str(tmp_path / "k.png")
    assert main(["kinetics", sim, "--reference", ref, "--lag", "2", "--plot", png, *common]) == 0
    d = json.loads(capsys.readouterr().out)
    for side in ("model", "reference"):
        _check_contract(d[side], ["phi", "psi"])
        assert d[side]["lag_ps"] == 2.0
    assert os.path.getsize(png) > 10_000 and d["plot"] == png
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
    # The plot is never overwritten without --overwrite.
    assert main(["kinetics", sim, "--plot", png, *common]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, match", [
    (["--basins", "A: chi<0; B: phi>0"], "--basins: basin 'A', condition 'chi<0': unknown coordinate 'chi'"),
    (["--basins", "A: phi<0"], "--basins: defines 1 basin"),
    (["--lag", "1.5"], "--lag: 1.5 ps is not a positive whole number of frames (frame spacing 1 ps)"),
])
def test_cli_bad_options_exit_2_with_a_clear_message(tmp_path, capsys, args, match):
    from latentlab.cli import main

    sim = _write_sim(tmp_path / "model.npz", _telegraph_phi(200, 2, 17), 1.0)
    assert main(["kinetics", sim, "--samples", "5", "--clusters", "4", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentlab kinetics: error: ") and match in err and "Traceback" not in err
    assert "Fix:" in err


def test_a_posterior_sample_with_two_unit_eigenvalues_gives_an_infinite_timescale_quietly():
    """A Bayesian MSM sample whose states split into two non-exchanging sets has an infinite implied
    timescale: the interval keeps it (no NaN from interpolating inf - inf), and no third-party warning."""
    import warnings

    from deeptime.markov.msm import MarkovStateModel

    from latentlab.kinetics.msm import MSMFit, timescales

    connected = MarkovStateModel(np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.1, 0.9]]))
    split = MarkovStateModel(np.array([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 1.0]]),
                             stationary_distribution=np.array([0.25, 0.25, 0.5]), reversible=True)
    fit = MSMFit(lag=1, prior=connected, samples=[connected] * 30 + [split] * 10, posterior=None,
                 active_fraction=1.0, seeded=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est, interval, samples = timescales(fit, 1, 0.5)
    assert np.isfinite(est[0]) and np.isinf(samples[-1, 0])
    assert interval[0, 0] == pytest.approx(est[0]) and np.isinf(interval[0, 1])
