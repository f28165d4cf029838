"""The alternatives to plain force matching: relative entropy and temperature / internal-energy matching."""

import pytest
import torch

from latentlab.data import load
from latentlab.model import CGModel
from latentlab.training import ForceMatching, RelativeEntropy, TemperatureMatching, Trainer

_RE_KEYS = ("estimator", "grid_points", "n_walkers", "steps_per_iteration", "burn_in", "restart_fraction", "dt",
            "gamma", "monitor_every")


def _fit(objective, data, cg_map=None, **kwargs):
    trainer = Trainer(objective, **kwargs)
    trainer.fit(data, cg_map)
    return trainer.result_


def train_force_matching(data, **kwargs):
    return _fit(ForceMatching(), data, **kwargs)


def train_temperature_matching(sets, energy_weight=0.01, **kwargs):
    return _fit(TemperatureMatching(energy_weight=energy_weight), sets, **kwargs)


def train_relative_entropy(data, spec=None, model=None, iterations=300, **kwargs):
    objective = RelativeEntropy(start=model, **{k: kwargs.pop(k) for k in _RE_KEYS if k in kwargs})
    return _fit(objective, data, spec, epochs=iterations, **kwargs)


@pytest.mark.slow
def test_temperature_matching_learns_the_internal_energy_of_three_atoms():
    """For three atoms U depends on Q only, so V - T dV/dT must equal U(Q) up to a constant."""
    from latentlab.testing import ThreeAtomSystem

    sets = [load("three-atom", n=6000, seed=1, temperature=t) for t in (300.0, 400.0)]
    result = train_temperature_matching(sets, epochs=25, device="cpu", seed=0, energy_weight=0.1, hidden=(64, 64))
    model = result.model.potential.double()
    assert model.temperature_conditioning and result.model.temperatures == [300.0, 400.0]
    q = ThreeAtomSystem().sample_cg(2000, seed=5)
    inside = ((q >= model.walls.lo) & (q <= model.walls.hi)).all(1)
    q = q[inside]
    t = torch.full((q.shape[0],), 350.0, dtype=torch.float64, requires_grad=True)
    v = model(q, t)
    (dv_dt,) = torch.autograd.grad(v.sum(), t)
    u_int = (v - t * dv_dt).detach()
    u = ThreeAtomSystem().energy_of_cg(q)
    resid = (u_int - u) - (u_int - u).mean()
    assert float(resid.std()) < 0.3 * float(u.std())
    # the model is a function of T: simulating at another temperature is allowed
    assert not torch.allclose(model(q[:5], 300.0), model(q[:5], 400.0))


def test_temperature_matching_refuses_a_single_temperature():
    sets = [load("three-atom", n=500, seed=s) for s in (1, 2)]
    with pytest.raises(ValueError, match="different temperatures"):
        train_temperature_matching(sets, epochs=1, device="cpu")



def _two_temperatures():
    return [load("three-atom", n=600, seed=1, temperature=t) for t in (300.0, 400.0)]


_SMALL = dict(epochs=6, batch_size=128, hidden=(16, 16), energy_weight=0.1, device="cpu", seed=3, patience=0)


def test_temperature_matching_stopped_and_resumed_matches_an_uninterrupted_run(tmp_path):
    import os

    sets = _two_temperatures()
    out = str(tmp_path / "t.pt")
    stopped = train_temperature_matching(sets, out=out, callback=lambda e: e["event"] == "epoch" and e["epoch"] == 3, **_SMALL)
    assert stopped.stopped == "callback" and stopped.checkpoint == out + ".ckpt" and os.path.exists(out + ".ckpt")
    assert len(stopped.history) == 3
    resumed = train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    assert resumed.stopped == "completed" and not os.path.exists(out + ".ckpt")
    reference = train_temperature_matching(sets, out=str(tmp_path / "ref.pt"), **_SMALL)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 7))
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in reference.history]
    a, b = resumed.model.potential.state_dict(), reference.model.potential.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.model.training["energy_offset"] == reference.model.training["energy_offset"]
    # a finished model (no checkpoint) is returned as is
    again = train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in resumed.history]


def test_temperature_matching_refuses_to_resume_with_other_settings_or_a_bad_checkpoint(tmp_path):
    sets = _two_temperatures()
    out = str(tmp_path / "t.pt")
    train_temperature_matching(sets, out=out, callback=lambda e: e["event"] == "epoch" and e["epoch"] == 1, **_SMALL)
    with pytest.raises(ValueError, match="different settings.*energy_weight.*same options"):
        train_temperature_matching(sets, out=out, resume=True, **{**_SMALL, "energy_weight": 0.5})
    with open(out + ".ckpt", "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(ValueError, match="unreadable.*delete it"):
        train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    torch.save({"format": "something else"}, out + ".ckpt")
    with pytest.raises(ValueError, match="not a latentlab training checkpoint"):
        train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    # a force-matching checkpoint under the same name
    train_force_matching(sets[0], epochs=3, hidden=(16,), out=out, device="cpu",
                         callback=lambda e: e["event"] == "epoch")
    with pytest.raises(ValueError, match="from force-matching training, not temperature-matching"):
        train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    # ... and the other way round
    train_temperature_matching(sets, out=out, callback=lambda e: e["event"] == "epoch" and e["epoch"] == 1, **_SMALL)
    with pytest.raises(ValueError, match="from temperature-matching training, not force-matching"):
        train_force_matching(sets[0], epochs=3, hidden=(16,), out=out, device="cpu", resume=True)
    # a finished model (no checkpoint left) of another kind is refused too
    import os

    os.remove(out + ".ckpt")
    with pytest.raises(ValueError, match="from temperature-matching training, not force-matching"):
        train_force_matching(sets[0], epochs=3, hidden=(16,), out=out, device="cpu", resume=True)


def _three_atom_moments(model, data, points=48):
    """``<r1>`` and ``var(cos)`` of the model's latent marginal ``exp(-V/kT) det A^-1/2`` by quadrature."""
    from latentlab.training.relative_entropy import quadrature_grid

    cg_map = model.cg_map()
    grid = quadrature_grid(cg_map, cg_map(torch.as_tensor(data.positions, dtype=torch.float64)), points)
    with torch.no_grad():
        w = torch.softmax(-model.potential.double()(grid) / model.kT - 0.5 * model.mass.logdet(grid), 0)
    return float((w * grid[:, 0]).sum()), float((w * grid[:, 2] ** 2).sum() - (w * grid[:, 2]).sum() ** 2)


def _without_forces(data):
    from latentlab.data.dataset import Dataset

    return Dataset.from_arrays(data.positions, masses=data.masses, temperature=data.temperature,
                               default_map=data.default_map, name="three-atom (no forces)")


@pytest.mark.slow
def test_relative_entropy_on_a_grid_learns_the_exact_distribution_from_configurations_alone():
    # No forces: the model starts flat (priors only) and is fit by maximum likelihood with the exact
    # quadrature of the model's normaliser.  The fit can be as good as the data, no better: compare
    # with the exact moments within 4 standard errors of the data's own sample moments.
    from latentlab.testing import ThreeAtomSystem

    full = load("three-atom", n=4000, seed=1)
    data = _without_forces(full)
    exact = ThreeAtomSystem().exact_moments()
    result = train_relative_entropy(data, estimator="grid", grid_points=24, device="cpu", seed=0)
    assert result.model.training["settings"]["start"] == "scratch"
    q = full.map()(torch.as_tensor(full.positions, dtype=torch.float64))
    n = q.shape[0]
    se_r1 = float(q[:, 0].std()) / n**0.5
    se_var_cos = float(((q[:, 2] - q[:, 2].mean()) ** 2).std()) / n**0.5
    start_r1, start_var_cos = _three_atom_moments(train_relative_entropy(data, iterations=1, lr=1e-12, estimator="grid",
                                                                           grid_points=24).model, full)
    mean_r1, var_cos = _three_atom_moments(result.model, full)
    assert abs(start_var_cos - exact["var_cos"]) > 20 * se_var_cos  # the flat start is far off
    assert abs(mean_r1 - exact["mean_r1"]) < 4 * se_r1
    assert abs(var_cos - exact["var_cos"]) < 4 * se_var_cos
    # validation negative log-likelihood went down
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"] - 1.0


@pytest.mark.slow
def test_relative_entropy_with_the_sampler_repairs_an_undertrained_model():
    # Two epochs of force matching leave var(cos) ~4x too large; persistent latent-Langevin walkers
    # (the sampler estimator) bring it to the exact value.
    from latentlab.testing import ThreeAtomSystem

    data = load("three-atom", n=4000, seed=1)
    exact = ThreeAtomSystem().exact_moments()
    start = train_force_matching(data, epochs=2, device="cpu", hidden=(64, 64), refit=False, support_prior=False).model
    _, var0 = _three_atom_moments(start, data)
    result = train_relative_entropy(data, model=start, estimator="sampler", iterations=100, lr=1e-3, n_walkers=256,
                                    steps_per_iteration=10, burn_in=50, device="cpu", seed=0)
    _, var1 = _three_atom_moments(result.model, data)
    assert abs(var0 - exact["var_cos"]) > 0.05
    assert abs(var1 - exact["var_cos"]) < 0.1 * abs(var0 - exact["var_cos"])


@pytest.mark.parametrize("estimator", ["grid", "sampler"])
def test_relative_entropy_stopped_and_resumed_matches_an_uninterrupted_run(tmp_path, estimator):
    data = load("three-atom", n=1000, seed=2)
    start = train_force_matching(data, epochs=2, device="cpu", hidden=(16, 16), refit=False).model
    small = dict(model=start, estimator=estimator, iterations=8, n_walkers=32, steps_per_iteration=3, burn_in=5,
                 grid_points=10, monitor_every=2, device="cpu", seed=3)
    whole = train_relative_entropy(data, **small)
    out = str(tmp_path / "re.pt")
    stopped = train_relative_entropy(data, out=out, callback=lambda e: e["event"] == "epoch" and e["epoch"] == 3, **small)
    assert stopped.stopped == "callback" and stopped.checkpoint is not None
    resumed = train_relative_entropy(data, out=out, resume=True, **small)
    assert len(resumed.history) == 8
    for key, value in whole.model.potential.state_dict().items():
        assert torch.equal(value, resumed.model.potential.state_dict()[key]), key
    train_relative_entropy(data, out=out + "x", callback=lambda e: e["event"] == "epoch", **small)
    with pytest.raises(ValueError, match="different settings"):
        train_relative_entropy(data, out=out + "x", resume=True, **{**small, "steps_per_iteration": 4})


def test_relative_entropy_refuses_bad_estimators_and_settings():
    data = load("three-atom", n=500, seed=2)
    start = train_force_matching(data, epochs=1, device="cpu", hidden=(8,), refit=False).model
    with pytest.raises(ValueError, match="unknown estimator"):
        train_relative_entropy(data, model=start, estimator="exact")
    with pytest.raises(ValueError, match="restart_fraction"):
        train_relative_entropy(data, model=start, restart_fraction=2.0)
    with pytest.raises(ValueError, match="n_cg <= 3"):
        four = load("alanine-dipeptide").select_frames(slice(0, 200))
        train_relative_entropy(four, "distances:4,6,8,10", estimator="grid", iterations=1)


@pytest.mark.slow
def test_relative_entropy_runs_from_a_force_matching_model_and_records_its_history(tmp_path):
    data = load("three-atom", n=4000, seed=1)
    start = train_force_matching(data, epochs=5, device="cpu", hidden=(32, 32)).model
    out = str(tmp_path / "re.pt")
    result = train_relative_entropy(data, model=start, iterations=6, n_walkers=64, steps_per_iteration=5, burn_in=10,
                                    estimator="sampler", device="cpu", out=out, monitor_every=3)
    assert len(result.history) == 6 and result.model.kind == "relative-entropy"
    assert result.model.training["started_from"]["kind"] == "force-matching"
    assert len(result.model.training["started_from"]["history"]) == len(start.training["history"])
    assert CGModel.load(out).mass.kind == "triangle"
    stopped = train_relative_entropy(data, model=start, iterations=50, n_walkers=16, steps_per_iteration=2, burn_in=2,
                                     estimator="sampler", device="cpu", callback=lambda e: e["event"] == "epoch" and e["epoch"] == 2)
    assert stopped.stopped == "callback" and len(stopped.history) == 2


@pytest.mark.slow
def test_cli_relative_entropy_with_and_without_forces(tmp_path, capsys):
    import json
    import os

    from latentlab.cli import main

    # With forces: force matching first (kept as MODEL.fm.pt), then relative entropy; --resume finds both done.
    out = str(tmp_path / "re.pt")
    args = ["train", "three-atom", "--frames", "2000", "--epochs", "5", "--hidden", "32,32", "--objective",
            "relative-entropy", "--iterations", "20", "--out", out, "--no-progress", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert os.path.exists(out + ".fm.pt") and not os.path.exists(out + ".ckpt")
    assert summary["epochs_run"] <= 20 and summary["convention"] == "consistent"
    assert main(args + ["--resume"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == summary["epochs_run"]
    # Without forces: relative entropy from configurations alone; plain force matching says what is missing.
    path = str(tmp_path / "noforces.h5")
    _without_forces(load("three-atom", n=2000, seed=4)).save(path)
    out2 = str(tmp_path / "re2.pt")
    assert main(["train", path, "--objective", "relative-entropy", "--iterations", "20", "--hidden", "32,32",
                 "--out", out2, "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == out2 and not os.path.exists(out2 + ".fm.pt")
    assert main(["train", path, "--objective", "force-matching", "--out", str(tmp_path / "fm.pt"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert "has no forces" in err and "relative-entropy" in err


@pytest.mark.slow
def test_cli_default_objective_refines_force_matching_on_the_grid_for_up_to_three_coordinates(tmp_path, capsys):
    import json

    from latentlab.cli import main

    out = str(tmp_path / "auto.pt")
    assert main(["train", "three-atom", "--frames", "1500", "--epochs", "3", "--hidden", "16,16", "--iterations", "5",
                 "--out", out, "--no-progress", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = CGModel.load(out)
    assert model.kind == "relative-entropy" and model.training["settings"]["estimator"] == "grid"
    assert model.training["started_from"]["kind"] == "force-matching" and summary["epochs_run"] <= 5
    # the summary names both stages, each with its own epochs (force matching refits on all frames)
    fm, re_ = summary["stages"]
    assert (fm["objective"], re_["objective"]) == ("force-matching", "relative-entropy")
    assert fm["epochs_run"] == 3 + fm["refit_epochs"] and fm["refit_epochs"] >= 1 and re_["epochs_run"] <= 5
    assert summary["seconds"] >= fm["seconds"] + re_["seconds"] - 1e-9
    eq9 = str(tmp_path / "eq9.pt")  # the eq. 9 V is not what relative entropy fits: force matching alone
    assert main(["train", "three-atom", "--frames", "1500", "--epochs", "2", "--hidden", "16,16", "--convention", "eq9",
                 "--out", eq9, "--no-progress", "--json"]) == 0
    capsys.readouterr()
    assert CGModel.load(eq9).kind == "force-matching"


def test_cli_train_text_says_each_stage_the_refit_and_why_validation_stopped(tmp_path, capsys):
    """``train`` without --json: the refit epochs are labelled, an early stop survives the refit that follows it,
    and the closing line names both stages of the default objective."""
    from latentlab.cli import main

    out = str(tmp_path / "auto.pt")
    # a learning rate this large makes the validation loss stop improving at once: patience 1 ends validation early
    assert main(["train", "three-atom", "--frames", "1500", "--epochs", "40", "--patience", "1", "--lr", "0.5",
                 "--hidden", "16,16", "--iterations", "3", "--out", out, "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "refitting on all frames" in text and "(refit)" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}: force-matching ") and "(early-stopping), then relative-entropy 3 updates" in last
    history = CGModel.load(out).training["started_from"]["history"]
    validated = sum(h["phase"] == "validate" for h in history)
    refit = sum(h["phase"] == "refit" for h in history)
    assert validated < 40 and f"force-matching {validated} epochs + {refit} refitting on all frames" in last
    # the refit epochs count to the epochs this run has, not to the maximum
    assert f"/{validated + refit}  train" in text and f"/{40 + refit}  train" not in text
