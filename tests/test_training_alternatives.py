"""The alternatives to plain force matching: relative entropy and temperature / internal-energy matching."""

import pytest
import torch

from latentlab.data import load
from latentlab.training import train_force_matching, train_relative_entropy, train_temperature_matching


@pytest.mark.slow
def test_temperature_matching_learns_the_internal_energy_of_three_atoms():
    """For three atoms U depends on Q only, so V - T dV/dT must equal U(Q) up to a constant."""
    from latentlab.testing import ThreeAtomSystem

    sets = [load("three-atom", n=6000, seed=1, temperature=t) for t in (300.0, 400.0)]
    result = train_temperature_matching(sets, epochs=25, device="cpu", seed=0, energy_weight=0.1, hidden=(64, 64))
    model = result.model.double()
    assert model.temperature_conditioning and result.model.metadata["temperatures"] == [300.0, 400.0]
    q = ThreeAtomSystem().sample_cg(2000, seed=5)
    inside = ((q >= model.wall_lo) & (q <= model.wall_hi)).all(1)
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
    stopped = train_temperature_matching(sets, out=out, callback=lambda e: e["epoch"] == 3, **_SMALL)
    assert stopped.stopped == "callback" and stopped.checkpoint == out + ".ckpt" and os.path.exists(out + ".ckpt")
    assert len(stopped.history) == 3
    resumed = train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    assert resumed.stopped == "completed" and not os.path.exists(out + ".ckpt")
    reference = train_temperature_matching(sets, out=str(tmp_path / "ref.pt"), **_SMALL)
    assert [h["epoch"] for h in resumed.history] == list(range(1, 7))
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in reference.history]
    a, b = resumed.model.state_dict(), reference.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.model.metadata["energy_offset"] == reference.model.metadata["energy_offset"]
    # a finished model (no checkpoint) is returned as is
    again = train_temperature_matching(sets, out=out, resume=True, **_SMALL)
    assert [h["val_loss"] for h in again.history] == [h["val_loss"] for h in resumed.history]


def test_temperature_matching_refuses_to_resume_with_other_settings_or_a_bad_checkpoint(tmp_path):
    sets = _two_temperatures()
    out = str(tmp_path / "t.pt")
    train_temperature_matching(sets, out=out, callback=lambda e: e["epoch"] == 1, **_SMALL)
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
    with pytest.raises(ValueError, match="force matching, not temperature matching"):
        train_temperature_matching(sets, out=out, resume=True, **_SMALL)

@pytest.mark.slow
def test_relative_entropy_runs_from_a_force_matching_model_and_records_its_history(tmp_path):
    data = load("three-atom", n=4000, seed=1)
    start = train_force_matching(data, epochs=5, device="cpu", hidden=(32, 32)).model
    out = str(tmp_path / "re.pt")
    result = train_relative_entropy(data, model=start, iterations=6, n_walkers=64, steps_per_iteration=5, burn_in=10,
                                    device="cpu", out=out, monitor_every=3)
    assert len(result.history) == 6 and all(h["phase"] == "relative-entropy" for h in result.history)
    assert result.model.metadata["training"]["kind"] == "relative-entropy"
    assert result.model.metadata["training"]["started_from"] == "force-matching"
    from latentlab.potentials import load_model

    assert load_model(out).metadata["mass_model"]["kind"] == "triangle"
    stopped = train_relative_entropy(data, model=start, iterations=50, n_walkers=16, steps_per_iteration=2, burn_in=2,
                                     device="cpu", callback=lambda e: e["epoch"] == 2)
    assert stopped.stopped == "callback" and len(stopped.history) == 2
