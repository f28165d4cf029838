"""CGPotential features and priors, and model files around it (round trip, corrupt/foreign files)."""

import math
import os

import pytest
import torch

from latentlab.maps.base import Coordinate
from latentlab.maps.mass_model import ConstantMass
from latentlab.model import CGModel
from latentlab.potentials import CGPotential


def save_model(potential, path):
    """Wrap a bare potential in a CGModel (constant A) and write it."""
    coords = [Coordinate(n, u, p) for n, u, p in zip(potential.names, potential.units, potential.periodic)]
    CGModel(potential, ConstantMass(torch.eye(potential.n_cg)), coords, potential.temperature).save(path)


def load_model(path):
    return CGModel.load(path).potential


def _model(**kwargs):
    torch.manual_seed(0)
    q = torch.randn(500, 3, dtype=torch.float64) * torch.tensor([0.1, 0.1, 1.0]) + torch.tensor([0.4, 0.4, 0.0])
    return CGPotential.from_data(q, periodic=[False, False, True], temperature=300.0, hidden=(16, 16), **kwargs), q


def test_periodic_coordinate_enters_as_sin_cos_so_v_is_periodic():
    model, q = _model()
    shifted = q.clone()
    shifted[:, 2] += 2 * math.pi
    assert torch.allclose(model(q), model(shifted), atol=1e-5)


def test_walls_are_zero_inside_the_data_range_and_grow_outside():
    model, q = _model()
    assert float(model.walls(q).abs().max()) == 0.0
    out = q[:3].clone()
    out[:, 0] = q[:, 0].max() + torch.tensor([0.01, 0.02, 0.04], dtype=q.dtype)
    w = model.walls(out)
    assert bool((w[1:] > w[:-1]).all()) and float(w[0]) > 0
    # 0.5 kT at 10 % of a standard deviation outside the range
    edge = q[:1].clone()
    edge[0, 0] = q[:, 0].max() + 0.1 * q[:, 0].std()
    assert float(model.walls(edge)) == pytest.approx(0.5 * model.kT, rel=1e-6)
    # periodic coordinates get no wall
    assert float(model.walls.k[2]) == 0.0


def test_no_prior_means_no_walls():
    model, q = _model(prior=False)
    far = q[:2] * 10
    assert float(model.walls(far).abs().max()) == 0.0


def test_temperature_conditioning_makes_v_depend_on_t():
    model, q = _model(temperature_conditioning=True)
    assert not torch.allclose(model(q[:5], 300.0), model(q[:5], 400.0))
    assert torch.allclose(model(q[:5]), model(q[:5], 300.0))


def test_gradient_has_the_shape_of_q_in_float32_and_float64():
    model, q = _model()
    for dtype in (torch.float32, torch.float64):
        m = model.to(dtype)
        g = m.gradient(q[:7].to(dtype))
        assert g.shape == (7, 3) and g.dtype == dtype


def test_model_file_round_trip_keeps_outputs_and_the_record(tmp_path):
    model, q = _model(temperature_conditioning=True)
    coords = [Coordinate("r1", "nm"), Coordinate("r2", "nm"), Coordinate("phi", "rad", True)]
    cg = CGModel(model, ConstantMass(torch.eye(3)), coords, 300.0, "consistent", "triangle:0,1,2",
                 start_points=q[:50], training={"kind": "force-matching", "history": [{"epoch": 1}]})
    path = str(tmp_path / "m.pt")
    cg.save(path)
    loaded = CGModel.load(path)
    assert torch.allclose(loaded.potential(q, 350.0), model(q, 350.0))
    assert torch.allclose(loaded.energy(q, temperature=350.0), model(q, 350.0))  # the conditioned V follows T
    assert loaded.map_spec == "triangle:0,1,2" and loaded.convention == "consistent" and loaded.kind == "force-matching"
    assert set(loaded.versions) >= {"latentlab", "torch", "python"}
    assert loaded.periodic == [False, False, True] and loaded.temperature == 300.0
    assert torch.equal(loaded.mass.matrix, torch.eye(3, dtype=torch.float64))
    assert torch.equal(loaded.start_points, q[:50])
    assert not any(name.startswith(".tmp-") for name in os.listdir(tmp_path))


def test_corrupt_truncated_and_foreign_model_files_give_clear_errors(tmp_path):
    model, _ = _model()
    good = str(tmp_path / "good.pt")
    save_model(model, good)
    data = open(good, "rb").read()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    foreign = str(tmp_path / "foreign.pt")
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="corrupt, truncated"):
        load_model(str(truncated))
    with pytest.raises(ValueError, match="is a text file, not a latentlab model file"):
        load_model(str(garbage))
    with pytest.raises(ValueError, match="not a latentlab model file"):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "missing.pt"))
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = 99
    newer = str(tmp_path / "newer.pt")
    torch.save(payload, newer)
    with pytest.raises(ValueError, match="format version 99"):
        load_model(newer)


def test_bad_constructor_arguments_are_refused():
    with pytest.raises(ValueError, match="hidden"):
        CGPotential(2, hidden=())
    with pytest.raises(ValueError, match="activation"):
        CGPotential(2, activation="relu6")
    with pytest.raises(ValueError, match="std"):
        CGPotential(2, std=[1.0, 0.0])
    with pytest.raises(ValueError, match="periodic"):
        CGPotential(2, periodic=[True])
    with pytest.raises(ValueError, match="Q"):
        CGPotential(2)(torch.zeros(4, 3))


def test_ensemble_potential_is_the_mean_of_its_members_and_round_trips(tmp_path):
    torch.manual_seed(0)
    q = torch.randn(200, 2, dtype=torch.float64)
    model = CGPotential.from_data(q, hidden=(8,), n_members=3)
    e = model.member_energies(q[:4])
    assert e.shape == (4, 3) and not torch.allclose(e[:, 0], e[:, 1])
    assert torch.allclose(model(q[:4]), e.mean(-1) + model.walls(q[:4]))
    assert torch.equal(model.prior_energy(q[:4]), model.walls(q[:4]))  # no support prior asked for
    path = str(tmp_path / "ens.pt")
    save_model(model, path)
    assert torch.allclose(load_model(path)(q[:4]), model(q[:4]))


def test_support_prior_is_zero_on_dense_data_and_rises_away_from_it(tmp_path):
    torch.manual_seed(0)
    q = torch.randn(4000, 2, dtype=torch.float64) * 0.3
    model = CGPotential.from_data(q, hidden=(8,), support=True)
    prior = model.support(q)
    assert float((prior == 0).double().mean()) == pytest.approx(0.98, abs=0.01)
    far = torch.tensor([[0.0, 0.0], [0.8, 0.0], [1.2, 0.0]], dtype=torch.float64)  # inside the walls' box
    p = model.support(far)
    assert float(p[0]) == 0.0 and 0 < float(p[1]) < float(p[2])
    path = str(tmp_path / "s.pt")
    save_model(model, path)
    assert torch.allclose(load_model(path)(far), model(far))
