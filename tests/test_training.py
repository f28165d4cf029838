"""The training loop with force matching: splits, targets, determinism, checkpoint/resume, stopping, recovery of an exact PMF."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from latentlab.data import load
from latentlab.forces import prepare_targets
from latentlab.maps import build_mass_model
from latentlab.model import CGModel
from latentlab.training import ForceMatching, Trainer, split_frames, time_block_split


def train_force_matching(data, *, convention="consistent", method="auto", **kwargs):
    """Force matching with the Trainer: returns its TrainResult (``.model`` is the CGModel)."""
    trainer = Trainer(ForceMatching(convention=convention, method=method), **kwargs)
    trainer.fit(data)
    return trainer.result_

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def three_atom():
    return load("three-atom", n=4000, seed=1)


def test_time_block_split_holds_out_whole_contiguous_blocks():
    train, val = time_block_split(1000, 0.1, 20, seed=3)
    assert len(train) + len(val) == 1000 and len(set(train.tolist()) & set(val.tolist())) == 0
    assert len(val) == 100
    blocks = set((val * 20 // 1000).tolist())
    assert len(blocks) == 2
    for b in blocks:  # every frame of a held-out block is held out
        assert set(range(b * 50, (b + 1) * 50)) <= set(val.tolist())
    with pytest.raises(ValueError, match="val_fraction"):
        time_block_split(100, 1.5, 10, 0)


def test_split_keeps_blocks_inside_replicas_and_holds_out_the_end_of_each():
    slices = [slice(0, 300), slice(300, 1000)]
    s = split_frames(1000, 0.2, 10, seed=1, holdout=0.1, slices=slices)
    held = set(s.holdout.tolist())
    assert held == set(range(270, 300)) | set(range(930, 1000))  # the last 10 % of each replica
    assert not (held & set(s.train.tolist())) and not (held & set(s.validation.tolist()))
    assert len(s.train) + len(s.validation) + len(held) == 1000
    rec = s.record()
    assert rec["holdout"] == [[270, 300], [930, 1000]]
    for a, b in rec["validation"]:  # no validation block straddles the replica boundary at frame 300
        assert not (a < 300 < b)
    assert set(s.fit.tolist()) == set(range(1000)) - held
    with pytest.raises(ValueError, match="holdout"):
        split_frames(1000, 0.1, 10, 0, holdout=1.0)


def test_targets_of_the_three_atom_system_are_the_exact_gradient_of_v(three_atom):
    from latentlab.testing import ThreeAtomSystem

    system = ThreeAtomSystem()
    cg_map = three_atom.map()
    q, g = prepare_targets(three_atom, cg_map, build_mass_model(cg_map, masses=three_atom.masses), dtype=torch.float64)
    qr = q.clone().requires_grad_(True)
    v = system.pmf(qr) - 0.5 * system.kT * torch.logdet(system.effective_mass(qr))
    (exact,) = torch.autograd.grad(v.sum(), qr)
    # positions are stored in float32, so agreement is to float32 round-off of the geometry
    assert float(((g - exact).abs() / (1.0 + exact.abs())).max()) < 1e-3


def test_training_is_deterministic_with_a_seed(three_atom):
    runs = [train_force_matching(three_atom, epochs=3, hidden=(32, 32), seed=7, device="cpu", patience=0)
            for _ in range(2)]
    assert [h["train_loss"] for h in runs[0].history] == [h["train_loss"] for h in runs[1].history]
    for a, b in zip(runs[0].model.potential.state_dict().values(), runs[1].model.potential.state_dict().values()):
        assert torch.equal(a, b)
    other = train_force_matching(three_atom, epochs=1, hidden=(32, 32), seed=8, device="cpu")
    assert other.history[0]["train_loss"] != runs[0].history[0]["train_loss"]


def test_history_entries_and_the_model_record(three_atom, tmp_path):
    out = str(tmp_path / "m.pt")
    result = train_force_matching(three_atom, epochs=2, hidden=(16,), seed=0, out=out, device="cpu")
    assert result.path == out and os.path.exists(out) and not os.path.exists(out + ".ckpt")
    assert all(set(h) >= {"epoch", "train_loss", "val_loss", "lr", "seconds", "phase"} for h in result.history)
    phases = [h["phase"] for h in result.history]
    best_epoch = result.model.training["best_epoch"]
    assert phases == ["validate"] * 2 + ["refit"] * best_epoch  # refit on all frames for the best epoch count
    assert [h["epoch"] for h in result.history] == list(range(1, len(phases) + 1))
    assert result.best_val_loss == min(h["val_loss"] for h in result.history if h["phase"] == "validate")
    model = CGModel.load(out)
    assert model.map_spec == "triangle:0,1,2" and model.convention == "consistent" and model.kind == "force-matching"
    assert model.mass.kind == "triangle" and model.consistency["verdict"] == "consistent"
    assert model.training["settings"]["seed"] == 0 and model.training["dataset"]["name"] == "three-atom"
    assert model.start_points.shape[1] == 3 and model.bounds[2] == (-1.0, 1.0)
    assert model.training["method"] == "mass-weighted" and "dihedrals" in model.training["method_reason"]
    frames = model.training["frames"]
    assert frames["n_frames"] == 4000 and frames["holdout"] == []
    assert sum(b - a for a, b in frames["validation"]) == 400  # 2 of 20 blocks


def test_fit_takes_the_map_object_and_the_model_keeps_a_fitted_pca_map(tmp_path):
    ds = load("alanine-dipeptide").select_frames(slice(0, 1500))
    cg_map = ds.map("pca:4,6,8,10,14,16:2")
    out = str(tmp_path / "pca.pt")
    trainer = Trainer(ForceMatching(), epochs=1, hidden=(8,), device="cpu", out=out)
    trainer.fit(ds, cg_map)
    loaded = CGModel.load(out).cg_map()
    x = torch.as_tensor(ds.positions[:20], dtype=torch.float64)
    assert torch.equal(loaded(x), cg_map(x))  # the same fitted components, no refit on load


def test_holdout_frames_are_never_trained_or_validated_on(three_atom):
    result = train_force_matching(three_atom, epochs=1, hidden=(8,), device="cpu", holdout=0.25)
    frames = result.model.training["frames"]
    assert frames["holdout"] == [[3000, 4000]]
    assert all(b <= 3000 for _, b in frames["train"] + frames["validation"])


def test_callback_returning_true_stops_within_a_batch(three_atom, tmp_path):
    events = []

    def callback(event):
        events.append(event)
        return event["event"] == "batch"

    t0 = time.perf_counter()
    result = train_force_matching(three_atom, epochs=50, hidden=(16,), batch_size=8, out=str(tmp_path / "m.pt"),
                                  callback=callback, callback_interval=0.0, device="cpu")
    assert time.perf_counter() - t0 < 30
    assert result.stopped == "callback" and result.history == []
    assert [e["event"] for e in events if e["event"] != "message"] == ["batch"]
    assert events[-1]["batch"] == 1
    assert os.path.exists(str(tmp_path / "m.pt"))  # the best model so far is written


def test_epoch_callback_sees_every_epoch_and_can_stop(three_atom):
    seen = []
    result = train_force_matching(three_atom, epochs=10, hidden=(16,), device="cpu",
                                  callback=lambda e: e["event"] == "epoch" and (seen.append(e["epoch"]) or e["epoch"] == 2))
    assert seen == [1, 2] and len(result.history) == 2 and result.stopped == "callback"


def test_bad_training_arguments_are_refused(three_atom, tmp_path):
    with pytest.raises(ValueError, match="epochs"):
        train_force_matching(three_atom, epochs=0)
    with pytest.raises(ValueError, match="holdout"):
        train_force_matching(three_atom, epochs=1, holdout=-0.1)
    with pytest.raises(ValueError, match="convention"):
        train_force_matching(three_atom, epochs=1, convention="nonsense")
    with pytest.raises(ValueError, match="device"):
        train_force_matching(three_atom, epochs=1, device="tpu")
    no_forces = three_atom.select_frames(slice(0, 100))
    no_forces.forces = None
    with pytest.raises(ValueError, match="forces"):
        train_force_matching(no_forces, epochs=1)


def test_resume_with_other_settings_is_refused(three_atom, tmp_path):
    out = str(tmp_path / "m.pt")
    train_force_matching(three_atom, epochs=5, hidden=(16,), out=out, device="cpu",
                         callback=lambda e: e["event"] == "epoch" and e["epoch"] == 2)
    assert os.path.exists(out + ".ckpt")
    with pytest.raises(ValueError, match="different settings.*hidden"):
        train_force_matching(three_atom, epochs=5, hidden=(32,), out=out, resume=True, device="cpu")
    resumed = train_force_matching(three_atom, epochs=5, hidden=(16,), out=out, resume=True, device="cpu", patience=0)
    assert [h["epoch"] for h in resumed.history][:5] == [1, 2, 3, 4, 5]
    assert [h["phase"] for h in resumed.history][5:] == ["refit"] * resumed.model.training["best_epoch"]
    again = train_force_matching(three_atom, epochs=5, hidden=(16,), out=out, resume=True, device="cpu", patience=0)
    assert again.history == resumed.history  # finished: the model is returned as it is
    with pytest.raises(ValueError, match="different settings"):
        train_force_matching(three_atom, epochs=5, hidden=(16,), out=out, resume=True, device="cpu", seed=3)


def _checkpoint_epoch(path):
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:
        return 0


@pytest.mark.slow
def test_training_killed_and_resumed_loses_at_most_one_epoch_and_matches_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    out = str(tmp_path / "killed.pt")
    args = [sys.executable, "-m", "latentlab.cli", "train", "three-atom", "--objective", "force-matching", "--frames", "3000", "--epochs", "40",
            "--hidden", "16,16", "--patience", "0", "--seed", "5", "--device", "cpu", "--no-progress", "--out"]
    proc = subprocess.Popen(args + [out], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while _checkpoint_epoch(out + ".ckpt") < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    log = proc.communicate()[0]
    done_epochs = log.count("\nepoch ") + log.startswith("epoch ")  # epochs finished before the kill
    killed_at = _checkpoint_epoch(out + ".ckpt")
    assert killed_at >= 4 and not os.path.exists(out), log
    assert done_epochs - killed_at <= 1  # at most the epoch in progress after the last checkpoint is lost
    subprocess.run(args + [out, "--resume"], env=env, check=True, capture_output=True, text=True, timeout=300)
    resumed = CGModel.load(out)
    reference = str(tmp_path / "reference.pt")
    subprocess.run(args + [reference], env=env, check=True, capture_output=True, text=True, timeout=300)
    uninterrupted = CGModel.load(reference)
    n = len(uninterrupted.training["history"])
    assert n > 40 and [h["epoch"] for h in resumed.training["history"]] == list(range(1, n + 1))
    assert [h["val_loss"] for h in resumed.training["history"]] == [h["val_loss"] for h in uninterrupted.training["history"]]
    for a, b in zip(resumed.potential.state_dict().values(), uninterrupted.potential.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_force_matching_recovers_the_exact_gradient_of_v_on_three_atoms():
    """grad of the learned V vs the exact grad of A_pmf - kT/2 ln det A, on fresh exact samples."""
    from latentlab.testing import ThreeAtomSystem

    system = ThreeAtomSystem()
    data = load("three-atom", n=20000, seed=2)
    result = train_force_matching(data, epochs=25, seed=0, device="cpu", patience=0)
    q = system.sample_cg(5000, seed=11)
    model = result.model.potential.double()
    inside = ((q >= model.walls.lo) & (q <= model.walls.hi)).all(1)  # the walls (prior) act outside the data range
    assert float(inside.double().mean()) > 0.99
    q = q[inside]
    qr = q.clone().requires_grad_(True)
    v = system.pmf(qr) - 0.5 * system.kT * torch.logdet(system.effective_mass(qr))
    (exact,) = torch.autograd.grad(v.sum(), qr)
    learned = model.gradient(q)
    scale = q.std(0)  # compare in standardised coordinates
    err = ((learned - exact) * scale).pow(2).mean().sqrt() / (exact * scale).pow(2).mean().sqrt()
    assert float(err) < 0.03


def test_ensemble_members_are_trained_on_their_own_losses(three_atom):
    result = train_force_matching(three_atom, epochs=2, hidden=(16,), ensemble=2, device="cpu", refit=False)
    model = result.model
    assert model.potential.n_members == 2 and model.training["settings"]["ensemble"] == 2
    q = model.start_points[:10]
    e = model.potential.double().member_energies(q)
    assert not torch.allclose(e[:, 0] - e[0, 0], e[:, 1] - e[0, 1])


def test_training_on_few_frames_says_so_before_it_starts():
    """A user's short trajectory trains, with a note that V rests on few samples (FEW_FRAMES)."""
    from latentlab.training.trainer import FEW_FRAMES

    events = []
    Trainer(ForceMatching(), epochs=1, seed=0, device="cpu", hidden=(8,), support_prior=False,
            callback=lambda e: events.append(e) or False).fit(load("three-atom", n=200, seed=1))
    notes = [e["message"] for e in events if e["event"] == "message" and e["message"].startswith("note: only")]
    assert len(notes) == 1 and "180 training and 20 validation frames" in notes[0], notes
    events.clear()
    Trainer(ForceMatching(), epochs=1, seed=0, device="cpu", hidden=(8,), support_prior=False,
            callback=lambda e: events.append(e) or False).fit(load("three-atom", n=2 * FEW_FRAMES, seed=1))
    assert not [e for e in events if e["event"] == "message" and e["message"].startswith("note: only")]


def test_train_cli_prints_a_note_once_though_each_training_stage_sends_it(capsys):
    from latentlab.cli.train import _printer

    show = _printer(progress=True)
    for text in ("preparing force-matching", "note: only 180 training frames", "preparing relative-entropy",
                 "note: only 180 training frames"):
        show({"event": "message", "message": text})
    out = capsys.readouterr().out
    assert "preparing relative-entropy" in out and out.count("note: only") == 1
