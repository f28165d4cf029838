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
