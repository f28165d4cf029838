"""`latentlab flow train|sample|report`: the public contract (options, JSON keys, files, errors)."""

import json
import os

import numpy as np
import pytest
import torch

from latentlab.cli import main

TINY = ["--initial-steps", "20", "--steps", "5", "--batch", "64", "--tempering", "linear", "--beta0", "0.5",
        "--delta-beta", "0.5", "--n-weights", "64", "--no-progress", "--seed", "1"]


@pytest.fixture(scope="module")
def trained_path(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "dw")
    assert main(["flow", "train", "double-well", "--out", out, *TINY]) == 0
    return out + ".pt"


def test_train_writes_a_flow_file_and_removes_the_checkpoint(trained_path, capsys):
    assert os.path.exists(trained_path) and not os.path.exists(trained_path + ".ckpt")
    data = torch.load(trained_path, weights_only=True)
    assert data["train"]["steps"] == 30 and data["settings"]["batch"] == 64
    assert main(["flow", "train", "double-well", "--out", trained_path, *TINY, "--resume"]) == 0
    assert "already trained" in capsys.readouterr().out
    assert main(["flow", "train", "double-well", "--out", trained_path, *TINY]) == 2
    assert "already exists" in capsys.readouterr().err


def test_report_json_has_the_contract_keys(trained_path, capsys, tmp_path):
    png = str(tmp_path / "fig.png")
    assert main(["flow", "report", trained_path, "--json", "--n", "3000", "--plot", png]) == 0
    rep = json.loads(capsys.readouterr().out)
    for key in ("ess_fraction", "n_samples", "populations", "train_seconds"):
        assert key in rep
    assert rep["n_samples"] == 3000 and 0 < rep["ess_fraction"] <= 1
    assert set(rep["populations"]) == {"x1<0", "x1>0"}
    for entry in rep["populations"].values():
        assert {"value", "stderr", "exact"} <= set(entry)
    assert rep["populations"]["x1<0"]["exact"] == pytest.approx(0.99165, abs=1e-5)
    assert os.path.getsize(png) > 1000
    assert main(["flow", "report", trained_path, "--n", "500"]) == 0
    assert "x1<0" in capsys.readouterr().out


def test_sample_writes_a_weighted_dataset_every_command_reads(trained_path, tmp_path, capsys):
    from latentlab.data import load

    out = str(tmp_path / "samples")
    assert main(["flow", "sample", trained_path, "--n", "400", "--out", out]) == 0
    ds = load(out + ".h5")
    assert ds.n_frames == 400 and ds.has_weights and ds.has_forces and ds.has_energies
    assert ds.temperature == pytest.approx(1 / 0.008314462618)
    assert np.isclose(ds.weights.mean(), 1.0)
    capsys.readouterr()
    assert main(["info", out + ".h5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["has_weights"] is True


def test_flow_errors_are_one_clear_line(trained_path, tmp_path, capsys):
    assert main(["flow", "train", "argon", "--out", str(tmp_path / "a"), *TINY]) == 2
    assert "use one of double-well" in capsys.readouterr().err
    assert main(["flow", "report", str(tmp_path / "missing.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bogus = tmp_path / "bogus.pt"
    torch.save({"format": "latentlab-flow-checkpoint"}, bogus)
    assert main(["flow", "sample", str(bogus), "--n", "5", "--out", str(tmp_path / "s")]) == 2
    assert "not its .ckpt" in capsys.readouterr().err
    assert main(["flow", "sample", trained_path, "--n", "5", "--out", trained_path]) == 2
    assert "also an input" in capsys.readouterr().err
    assert main(["flow", "train", "double-well", "--out", str(tmp_path / "r"), *TINY, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_interrupted_training_resumes_from_the_checkpoint(tmp_path, capsys, monkeypatch):
    from latentlab.flows import train as train_module

    out = str(tmp_path / "run")
    original = train_module.FlowTrainer.fit

    def fit_then_stop(self):
        self.callback = lambda info: info["step"] >= 22
        return original(self)

    monkeypatch.setattr(train_module.FlowTrainer, "fit", fit_then_stop)
    assert main(["flow", "train", "double-well", "--out", out, *TINY]) == 130
    assert os.path.exists(out + ".pt.ckpt") and not os.path.exists(out + ".pt")
    assert "continue with --resume" in capsys.readouterr().out
    monkeypatch.setattr(train_module.FlowTrainer, "fit", original)
    assert main(["flow", "train", "double-well", "--out", out, *TINY]) == 2
    assert "interrupted run" in capsys.readouterr().err
    assert main(["flow", "train", "double-well", "--out", out, *TINY, "--resume"]) == 0
    assert os.path.exists(out + ".pt") and not os.path.exists(out + ".pt.ckpt")
