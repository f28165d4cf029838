"""Self-consistency of positions and forces: -kT ln p(xi) vs the integrated binned mean force.

Runs on exact samples of the analytic systems (with negative controls that
must fail: flipped sign, wrong energy unit) and on the built-in OpenMM sets
when they exist.  Plots are kept in ``artifacts/`` as test artefacts.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from latentlab.data import BUILTIN_FILES, Dataset, builtin_path, load
from latentlab.data.checks import dataset_consistency, pmf_consistency

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "artifacts")


def _artifact(name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    return os.path.join(ARTIFACTS, name)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _scaled(ds: Dataset, factor: float) -> Dataset:
    return Dataset.from_arrays(ds.positions, ds.forces * factor, masses=ds.masses, temperature=ds.temperature, topology=ds.topology,
                               check_units=False, name=ds.name, default_map=ds.default_map)


def test_double_well_x_is_self_consistent_and_controls_fail():
    ds = load("double-well", n=40000, seed=1)
    res = dataset_consistency(ds, "linear:0", index=0, bins=60, min_count=100)
    res.plot(_artifact("consistency-double-well-x.png"))
    assert res.summary()["bins_compared"] >= 15
    assert res.max_abs_z < 4.0 and res.chi2_per_bin < 2.5
    assert dataset_consistency(_scaled(ds, -1.0), "linear:0", bins=30, min_count=200).max_abs_z > 8
    assert dataset_consistency(_scaled(ds, 4.184), "linear:0", bins=30, min_count=200).max_abs_z > 8


def test_three_atom_distance_needs_and_has_the_jacobian_term():
    """For a distance the mean force includes -2kT/r (from div B); the check passes only with it."""
    ds = load("three-atom", n=40000, seed=2)
    res = dataset_consistency(ds, "distances:0-1", bins=60, min_count=100)
    assert res.max_abs_z < 4.0 and res.chi2_per_bin < 2.5
    # dropping -kT div B (i.e. projecting the force only) must fail
    cg_map = ds.map("distances:0-1")
    pos = torch.as_tensor(ds.positions, dtype=torch.float64)
    r = cg_map(pos)[:, 0].numpy()
    u = (ds.positions[:, 0] - ds.positions[:, 1]) / r[:, None]
    f_proj = -0.5 * ((ds.forces[:, 0] - ds.forces[:, 1]) * u).sum(-1)  # -(F_a - F_b).u / 2 = B grad U (equal-mass-free B)
    bad = pmf_consistency(r, f_proj, ds.kT, bins=30, min_count=200)
    assert bad.max_abs_z > 4.0


def _builtin(name):
    if not os.path.exists(builtin_path(name)):
        pytest.skip(f"built-in data set {name!r} not generated yet ({builtin_path(name)} missing; "
                    "run latentlab/data/make_builtin.sh)")
    return load(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in BUILTIN_FILES if n.startswith("alanine")])
def test_alanine_dipeptide_phi_pmf_matches_integrated_mean_force(name):
    ds = _builtin(name)
    res = dataset_consistency(ds, "dihedrals:phi", bins=40, min_count=100, n_blocks=20)
    res.plot(_artifact(f"consistency-{name}-phi.png"))
    s = res.summary()
    assert s["bins_compared"] >= 10, s
    assert res.max_abs_z < 4.0 and res.chi2_per_bin < 2.5, s
    # the check has power: forces in kcal/mol taken for kJ/mol would fail
    assert dataset_consistency(_scaled(ds, 1 / 4.184), "dihedrals:phi", bins=40, min_count=100).max_abs_z > 4


@pytest.mark.slow
@pytest.mark.parametrize("spec, strict", [
    ("distances:0-5", True),   # r1 of the triangle of Bruce et al.: CA of residue 1 to CA of residue 6
    ("distances:5-9", True),   # r2: CA of residue 6 to CA of residue 10
    ("distances:0-9", False),  # end-to-end, the slowest coordinate (folding); see below
])
def test_chignolin_ca_distance_pmf_matches_integrated_mean_force(spec, strict):
    """CA forces (aggregated over each CA's constraint group) are consistent with the CA histogram.

    The z-scores of an integrated curve are strongly correlated from bin to
    bin, so chi2/bin is not chi2-distributed; max|z| < 4 is the criterion for
    every coordinate.  The end-to-end distance also changes on the folding
    time scale (the 6 ns run has one partial unfolding excursion near its
    end), so its histogram is the least converged: chi2/bin is only reported
    for it.
    """
    ds = _builtin("chignolin")
    res = dataset_consistency(ds, spec, bins=30, min_count=100, n_blocks=20)
    res.plot(_artifact(f"consistency-chignolin-{spec.split(':')[1]}.png"))
    s = res.summary()
    print(s)
    assert s["bins_compared"] >= 8, s
    assert res.max_abs_z < 4.0, s
    if strict:
        assert res.chi2_per_bin < 2.5, s
    # the check has power: a kcal/kJ mix-up fails
    assert dataset_consistency(_scaled(ds, 1 / 4.184), spec, bins=30, min_count=100).max_abs_z > 4


# ---------------------------------------------------------------------- force scale (the import check)

from latentlab.data.checks import CONSISTENT_LOG, force_scale, judge_force_scale  # noqa: E402

UNITS = [(e, l) for e in ("kJ/mol", "kcal/mol") for l in ("nm", "angstrom")]
TO_KJ_NM = {("kJ/mol", "nm"): 1.0, ("kJ/mol", "angstrom"): 10.0, ("kcal/mol", "nm"): 4.184, ("kcal/mol", "angstrom"): 41.84}


@pytest.mark.parametrize("name", ["three-atom", "double-well", "gaussian-mixture"])
def test_force_scale_is_one_on_exact_samples(name):
    """Exact Boltzmann samples: s = 1 within its jackknife error (z-score, fixed seed)."""
    result = force_scale(load(name, n=20000, seed=5))
    assert abs(result.scale - 1.0) < 4 * result.scale_err
    assert result.scale_err < 0.02  # sharp enough to tell 4.184 and 10 apart by far
    assert judge_force_scale(result, 300.0)[0] == "consistent"


@pytest.mark.parametrize("name", list(BUILTIN_FILES))
def test_force_scale_passes_the_builtin_sets(name):
    """OpenMM data: consistent (finite-timestep Langevin shifts s by 0.5-2.5 %, inside the 10 % tolerance)."""
    if not os.path.exists(builtin_path(name)):
        pytest.skip(f"built-in {name!r} not generated")
    ds = load(name)
    result = force_scale(Dataset.from_arrays(ds.positions, ds.forces, masses=ds.masses, temperature=ds.temperature,
                                             check_units=False, forces_aggregated=ds.forces_aggregated))  # no topology
    assert abs(np.log(result.scale)) < CONSISTENT_LOG and result.scale_err < 0.01
    assert judge_force_scale(result, ds.temperature)[0] == "consistent"


@pytest.mark.parametrize("true", UNITS)
@pytest.mark.parametrize("declared", UNITS)
def test_force_scale_names_every_unit_mistake(true, declared):
    """Forces written in ``true`` units but declared in ``declared`` ones: the verdict names ``true``."""
    ds = load("three-atom", n=3000, seed=1)
    factor = TO_KJ_NM[declared] / TO_KJ_NM[true]  # stored = correct * (declared-to-kJ/nm) / (true-to-kJ/nm)
    stored = Dataset.from_arrays(ds.positions, ds.forces * factor, masses=ds.masses, temperature=300.0, check_units=False)
    verdict, problem, fix = judge_force_scale(force_scale(stored), 300.0, *declared)
    if true == declared:
        assert verdict == "consistent"
    else:
        assert verdict == "unit", problem
        assert f"if they were in {true[0]}/{true[1]}" in problem and f"--force-unit {true[0]}/{true[1]}" in fix


def test_force_scale_names_gradients_and_wrong_temperatures():
    ds = load("double-well", n=5000, seed=2)
    verdict, problem, _ = judge_force_scale(force_scale(_scaled(ds, -1.0)), 300.0)
    assert verdict == "sign" and "gradients" in problem
    result = force_scale(Dataset.from_arrays(ds.positions, ds.forces, masses=ds.masses, temperature=360.0,
                                             check_units=False))
    assert result.scale == pytest.approx(1.2, abs=4 * result.scale_err)  # s = T_stated / T_true
    verdict, problem, _ = judge_force_scale(result, 360.0)
    assert verdict == "temperature" and "not the stated 360 K" in problem


def test_force_scale_with_few_frames_is_inconclusive_not_wrong():
    ds = load("three-atom", n=100, seed=0)
    result = force_scale(ds, n_blocks=20)
    verdict = judge_force_scale(result, 300.0)[0]
    assert verdict in ("consistent", "inconclusive")
    with pytest.raises(ValueError, match="needs at least 100 frames"):
        force_scale(load("three-atom", n=50, seed=0))


def test_force_scale_sums_forces_over_constraint_groups():
    """Chignolin all-atom (HBonds): the constrained X-H bonds are found and skipped, their forces summed."""
    if not os.path.exists(builtin_path("chignolin")):
        pytest.skip("built-in chignolin not generated")
    full = load("chignolin").allatom()
    bare = Dataset.from_arrays(full.positions, full.forces, masses=full.masses, temperature=300.0, check_units=False)
    result = force_scale(bare)
    assert result.rigid_groups == len(set(full.constraint_group[full.constraint_group != np.arange(full.n_atoms)]))
    assert abs(np.log(result.scale)) < CONSISTENT_LOG


def test_force_scale_of_a_liquid_is_inconclusive_not_refused():
    """Atoms that do not stay together (an ideal gas) give no coordinate to test: no verdict, no refusal."""
    from latentlab.data.checks import check_forces

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 3.0, size=(400, 20, 3))
    ds = Dataset.from_arrays(x, np.zeros_like(x), masses=np.full(20, 39.95), temperature=300.0, check_units=False)
    result = check_forces(ds)
    assert result.verdict == "inconclusive" and not result.coordinates
