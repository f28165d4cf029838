"""The loop closed on the double well, through the public commands: a flow trained on the potential alone,
its weighted samples as a data set, V trained in its slow latent, latent Langevin, ``compare``."""

import json
import math

import numpy as np
import pytest
import torch

from latentlab.cli import main

FLOW = ["--initial-steps", "1500", "--steps", "100", "--batch", "256", "--tempering", "linear", "--beta0", "0.25",
        "--delta-beta", "0.25", "--n-weights", "1000", "--no-progress", "--seed", "0"]


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("loop")
    flow, data, model, sim = (str(d / name) for name in ("dw.pt", "dw.h5", "v.pt", "s.npz"))
    assert main(["flow", "train", "double-well", "--out", flow, *FLOW]) == 0
    assert main(["flow", "sample", flow, "--n", "3000", "--out", data, "--seed", "1"]) == 0
    assert main(["train", data, "--map", f"flow:{flow}", "--out", model, "--epochs", "40", "--iterations", "100",
                 "--no-progress"]) == 0
    assert main(["simulate", model, "--walkers", "400", "--steps", "2500", "--dt", "0.01", "--gamma", "15",
                 "--out", sim, "--seed", "2", "--no-progress"]) == 0
    return {"flow": flow, "data": data, "model": model, "sim": sim}


@pytest.mark.slow
def test_latent_langevin_in_the_flows_slow_latent_matches_its_reweighted_marginal(loop, capsys):
    capsys.readouterr()
    assert main(["compare", loop["sim"], "--reference", loop["data"], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["reference_weighted"] is True and math.isfinite(res["js_noise_floor"])
    assert res["ratio"] <= 1.5, res


@pytest.mark.slow
def test_walkers_start_from_the_weighted_distribution_and_keep_it(loop):
    """The fraction of walker time at z < 0 against the reweighted fraction of the samples, within 3 standard
    errors: the walkers' binomial error (one draw per walker: the barrier is ~12 kT) and the weighted estimate's."""
    from latentlab.data import load
    from latentlab.model import CGModel
    from latentlab.simulation import load_simulation

    ds = load(loop["data"])
    model = CGModel.load(loop["model"])
    z = model.cg_map(ds).map_frames(ds.positions).numpy()[:, 0]
    w = ds.weights / ds.weights.sum()
    side = z < 0
    p_ref = float(np.sum(w * side))
    se_ref = float(np.sqrt(np.sum(w**2 * (side - p_ref) ** 2)))
    q = load_simulation(loop["sim"])["Q"][:, :, 0]  # (n_records, n_walkers)
    p_sim = float((q[q.shape[0] // 4:] < 0).mean())
    se_sim = math.sqrt(max(p_ref * (1 - p_ref), 1e-12) / q.shape[1])
    assert abs(p_sim - p_ref) < 3 * math.hypot(se_ref, se_sim)


@pytest.mark.slow
def test_models_stationary_marginal_has_the_flows_basin_populations(loop):
    """The relative free energy of the basins, which short runs do not cross: the model's stationary density by
    quadrature gives P(z < 0) within 3 standard errors of the reweighted samples (error of the weighted mean)."""
    from latentlab.compare import compare_latent
    from latentlab.data import load
    from latentlab.flows.loop import model_marginal_samples
    from latentlab.model import CGModel

    ds = load(loop["data"])
    model = CGModel.load(loop["model"])
    cg = model.cg_map(ds)
    z = cg.map_frames(ds.positions).numpy()
    w = ds.weights / ds.weights.sum()
    side = z[:, 0] < 0
    p_ref = float(np.sum(w * side))
    se_ref = float(np.sqrt(np.sum(w**2 * (side - p_ref) ** 2)))
    x = model_marginal_samples(model, z, 200_000, seed=3)
    p_model = float((x[:, 0] < 0).mean())
    assert abs(p_model - p_ref) < 3 * math.hypot(se_ref, math.sqrt(p_ref * (1 - p_ref) / x.shape[0]))
    res = compare_latent(x, z, names=cg.names, periodic=cg.periodic, reference_weights=ds.weights)
    assert res["ratio"] <= 1.5, res


def test_flow_map_is_stored_by_its_path_and_rebuilt(loop):
    from latentlab.flows import FlowSlowMap, flow_slow_map, load_flow
    from latentlab.maps.spec import map_from_dict, parse_map

    cg = parse_map(f"flow:{loop['flow']}", n_atoms=1)
    assert isinstance(cg, FlowSlowMap) and cg.kind == "flow"
    d = cg.to_dict()
    assert d["kind"] == "flow" and d["path"] == cg.path and d["n_atoms"] == 1
    again = map_from_dict(d)
    x = torch.randn(5, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(cg(x), again(x))
    assert flow_slow_map(load_flow(loop["flow"])).to_dict() is None  # no file: cannot be stored


def test_simulate_data_starts_are_drawn_by_weight(loop, tmp_path):
    """``simulate --data`` on a weighted data set starts walkers by weight: with all weight on one frame every walker
    starts there."""
    from latentlab.cli.simulate import _starts_from_data
    from latentlab.data import load
    from latentlab.model import CGModel

    ds = load(loop["data"])
    ds.weights = np.zeros(ds.n_frames)
    ds.weights[7] = 1.0
    one = str(tmp_path / "one.h5")
    ds.save(one)
    model = CGModel.load(loop["model"])
    q0 = _starts_from_data(model, one, 8, 0)
    expected = model.cg_map(ds).map_frames(ds.positions[7:8])
    torch.testing.assert_close(q0, expected.expand(8, -1).to(q0.dtype))


def test_flow_sample_without_forces_is_a_weighted_dataset_for_relative_entropy(loop, tmp_path):
    from latentlab.data import load

    out = str(tmp_path / "nf.h5")
    assert main(["flow", "sample", loop["flow"], "--n", "200", "--out", out, "--no-forces"]) == 0
    ds = load(out)
    assert ds.n_frames == 200 and not ds.has_forces and ds.has_weights and ds.has_energies
