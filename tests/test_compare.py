"""compare_latent: identical vs shifted distributions, periodic wrapping, the noise floor, the CLI contract."""

import json

import numpy as np
import pytest

from latentlab.compare import compare_latent, js_divergence, plot_comparison


def _gauss(n, seed, shift=0.0, scale=1.0, dim=3):
    return np.random.default_rng(seed).normal(size=(n, dim)) * scale + shift


def test_identical_distributions_sit_below_the_noise_floor_and_shifted_ones_far_above():
    ref = _gauss(10000, 0)
    same = compare_latent(_gauss(50000, 1), ref)
    shifted = compare_latent(_gauss(50000, 1, shift=0.5), ref)
    assert same["ratio"] < 1.0
    assert shifted["ratio"] > 3.0
    assert shifted["kl"] > same["kl"]
    assert shifted["wasserstein"]["q0"] == pytest.approx(0.5, abs=0.05)
    assert {"js_divergence", "js_noise_floor", "ratio", "kl", "wasserstein", "binning"} <= set(same)
    assert same["binning"]["bins_per_coordinate"] == 10 and same["binning"]["kind"] == "joint"


def test_noise_floor_splits_the_reference_in_time_not_shuffled():
    ref = _gauss(10000, 0, dim=1)
    ref[5000:] += 0.3  # a drift between the halves is noise the model cannot beat
    drifted = compare_latent(_gauss(20000, 1, dim=1), ref)
    shuffled = compare_latent(_gauss(20000, 1, dim=1), np.random.default_rng(2).permutation(ref))
    assert drifted["js_noise_floor"] > 5 * shuffled["js_noise_floor"]


def test_periodic_coordinates_are_wrapped_and_use_the_whole_circle():
    ref = np.random.default_rng(0).vonmises(2.5, 2.0, size=(8000, 2))
    samples = np.random.default_rng(1).vonmises(2.5, 2.0, size=(20000, 2))
    a = compare_latent(samples, ref, periodic=[True, True])
    b = compare_latent(samples + 2 * np.pi, ref, periodic=[True, True])
    assert a["js_divergence"] == pytest.approx(b["js_divergence"])
    assert a["binning"]["ranges"][0] == pytest.approx([-np.pi, np.pi])
    # a distribution straddling +-pi is close to itself across the cut
    assert a["wasserstein"]["q0"] < 0.05


def test_samples_outside_the_reference_range_are_counted_not_dropped():
    ref = _gauss(5000, 0, dim=2)
    escaped = np.concatenate([_gauss(5000, 1, dim=2), np.full((5000, 2), 100.0)])
    assert compare_latent(escaped, ref)["js_divergence"] > 0.15  # ~0.005 if the escaped half were dropped


def test_js_divergence_limits():
    p = np.array([0.5, 0.5, 0.0])
    assert js_divergence(p, p) == 0.0
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(np.log(2))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="coordinates"):
        compare_latent(_gauss(10, 0, dim=2), _gauss(10, 0, dim=3))
    with pytest.raises(ValueError, match="NaN"):
        compare_latent(np.full((5, 1), np.nan), _gauss(10, 0, dim=1))
    with pytest.raises(ValueError, match="bins"):
        compare_latent(_gauss(10, 0, dim=1), _gauss(10, 0, dim=1), bins=1)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_plot_comparison_writes_a_png(tmp_path, dim):
    out = str(tmp_path / f"cmp{dim}.png")
    plot_comparison(_gauss(2000, 1, dim=dim), _gauss(2000, 0, dim=dim), periodic=[dim == 2] * dim, out=out, title="t")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_cli_train_simulate_compare_and_the_eq9_bias_is_visible(tmp_path, capsys, artifacts_dir):
    """The whole loop through the CLI on three atoms: the consistent V matches, the eq. 9 V of Bruce et al. does not."""
    from latentlab.cli import main

    ratios = {}
    for convention in ("consistent", "eq9"):
        model, sim = str(tmp_path / f"{convention}.pt"), str(tmp_path / f"{convention}.npz")
        assert main(["train", "three-atom", "--out", model, "--epochs", "15", "--convention", convention,
                     "--objective", "force-matching",
                     "--no-progress", "--json", "--no-support-prior"]) == 0
        capsys.readouterr()
        assert main(["simulate", model, "--walkers", "400", "--steps", "1200", "--out", sim, "--json"]) == 0
        capsys.readouterr()
        plot = f"{artifacts_dir}/compare-three-atom-{convention}.png"
        assert main(["compare", sim, "--reference", "three-atom", "--json", "--plot", plot, "--overwrite"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert {"js_divergence", "js_noise_floor", "ratio", "reseeded_fraction", "kinetic_temperature_ratio"} <= set(result)
        ratios[convention] = result["ratio"]
    assert ratios["consistent"] < 1.5
    assert ratios["eq9"] > 2 * ratios["consistent"]
    # the old name of the convention still works, with a note
    old = str(tmp_path / "old.pt")
    assert main(["train", "three-atom", "--frames", "500", "--out", old, "--epochs", "1", "--convention", "seed_eq9",
                 "--no-progress", "--json"]) == 0
    assert "deprecated; use eq9" in capsys.readouterr().err


def test_a_perfect_model_scores_about_a_quarter_of_the_noise_floor():
    """The ratio's scale (the size correction): the model is compared with all N scored frames, the floor compares
    two halves of N/2, so a perfect model (samples from the reference's own density) scores 1/4 to leading order
    for independent frames; higher orders push it up a little (0.30 +- 0.01 here: 4000 frames, 10 x 10 bins)."""
    ratios = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref = rng.normal(size=(4000, 2))
        ref[:2000, 0] += 2.0
        rng.shuffle(ref)
        model = rng.normal(size=(200000, 2))
        model[:100000, 0] += 2.0
        ratios.append(compare_latent(model, ref, bins=10)["ratio"])
    ratios = np.asarray(ratios)
    se = ratios.std(ddof=1) / np.sqrt(len(ratios))
    assert 0.25 - 3 * se < ratios.mean() < 0.35 + 3 * se
    shifted = compare_latent(model + np.array([0.5, 0.0]), ref, bins=10)["ratio"]  # a model off by 0.5 sigma
    assert shifted > 5 * ratios.mean()


def test_scoring_against_held_out_frames_catches_a_model_that_memorised_its_training_histogram():
    """A model whose samples are its training frames' histogram looks perfect on them and ordinary on the rest."""
    from latentlab.compare import scoring_frames
    from latentlab.data import load
    from latentlab.training.splits import ranges_to_indices, split_frames

    ds = load("alanine-dipeptide")
    cg_map = ds.map()
    q = cg_map.map_frames(ds.positions).numpy()
    record = split_frames(ds.n_frames, 0.1, 20, seed=0, holdout=0.2).record()
    held, info = scoring_frames(record, ds)
    assert info == {"against": "holdout", "scored_frames": 2500, "training_frames": 10000}
    assert held.min() == 10000 and held.max() == 12499
    seen = np.sort(np.concatenate([ranges_to_indices(record["train"]), ranges_to_indices(record["validation"])]))
    memoriser = q[seen][np.random.default_rng(0).integers(0, len(seen), 200000)]
    on_training = compare_latent(memoriser, q[seen], periodic=cg_map.periodic)["ratio"]
    on_held_out = compare_latent(memoriser, q[held], periodic=cg_map.periodic)["ratio"]
    assert on_training < 0.05 < 0.2 < on_held_out  # "better than perfect" on what it saw: the tell-tale of memorising
    all_frames, info_all = scoring_frames(record, ds, "all")
    assert len(all_frames) == ds.n_frames and info_all["against"] == "all"
    with pytest.raises(ValueError, match="no hold-out"):
        scoring_frames(split_frames(ds.n_frames, 0.1, 20, seed=0).record(), ds, "holdout")
    with pytest.raises(ValueError, match="data set of 12500 frames"):
        scoring_frames(record, ds.select_frames(slice(0, 100)), "holdout")


def test_reference_weights_reweight_the_histograms():
    """Samples of N(0, 1) reweighted to N(1, 1) (w = exp(x - 1/2)) compare like samples of N(1, 1)."""
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(20000, 1))
    w = np.exp(ref[:, 0] - 0.5)
    target = rng.normal(loc=1.0, size=(100000, 1))
    weighted = compare_latent(target, ref, reference_weights=w)
    plain = compare_latent(target, ref)
    assert weighted["reference_weighted"] and weighted["js_divergence"] < 0.05 * plain["js_divergence"]
    assert weighted["wasserstein"]["q0"] < 0.05 < plain["wasserstein"]["q0"]
    with pytest.raises(ValueError, match="reference_weights"):
        compare_latent(target, ref, reference_weights=w[:10])
