"""CG maps: values against mdtraj, Jacobians against autograd, closed forms, specs and bad input."""

import sys

import mdtraj as md
import numpy as np
import pytest
import torch

from latentlab.maps import (EncoderMap, LinearMap, PCAMap, TriangleMap, effective_mass, parse_map,
                            select_atoms)
from latentlab.testing import ThreeAtomSystem


def random_frames(n_frames, n_atoms, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    base = torch.arange(n_atoms, dtype=dtype)[:, None] * torch.tensor([0.15, 0.05, 0.02], dtype=dtype)
    return base + 0.05 * torch.randn(n_frames, n_atoms, 3, generator=gen, dtype=dtype)


def as_traj(x):
    top = md.Topology()
    chain = top.add_chain()
    res = top.add_residue("UNK", chain)
    for i in range(x.shape[1]):
        top.add_atom(f"C{i}", md.element.carbon, res)
    return md.Trajectory(x.numpy(), top)


def test_internal_maps_match_mdtraj():
    x = random_frames(50, 6)
    traj = as_traj(x)
    d = parse_map("distances:0-3,2-5", n_atoms=6)(x)
    np.testing.assert_allclose(d.numpy(), md.compute_distances(traj, [[0, 3], [2, 5]]), rtol=1e-6)
    a = parse_map("angles:0-1-2,3-4-5", n_atoms=6)(x)
    np.testing.assert_allclose(a.numpy(), md.compute_angles(traj, [[0, 1, 2], [3, 4, 5]]), rtol=1e-5, atol=1e-6)
    t = parse_map("dihedrals:0-1-2-3,2-3-4-5", n_atoms=6)(x)
    np.testing.assert_allclose(t.numpy(), md.compute_dihedrals(traj, [[0, 1, 2, 3], [2, 3, 4, 5]]), rtol=1e-5, atol=1e-6)


def test_triangle_map_values_and_metadata():
    x = random_frames(20, 3)
    q = TriangleMap(0, 1, 2)(x)
    u, v = x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]
    torch.testing.assert_close(q[:, 0], u.norm(dim=1))
    torch.testing.assert_close(q[:, 2], (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)))
    m = TriangleMap(0, 1, 2)
    assert m.names == ["r1", "r2", "cos"] and m.units == ["nm", "nm", "1"] and m.bounds[2] == (-1.0, 1.0)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_triangle_map_mass_matches_closed_form(dtype, tol):
    system = ThreeAtomSystem()
    x, _ = system.sample(500, seed=4)
    x = x.to(dtype)
    cg_map = system.cg_map()
    masses = system.masses_tensor(dtype)
    numeric = effective_mass(cg_map, x, masses)
    closed = cg_map.closed_form_effective_mass(cg_map(x), 1.0 / masses)
    assert torch.allclose(numeric, closed, rtol=tol, atol=tol * float(closed.abs().max()))


def test_forward_and_reverse_jacobians_agree():
    from torch.func import jacfwd, jacrev, vmap

    x = random_frames(10, 5)
    for spec in ["distances:0,1,2,3,4", "dihedrals:0-1-2-3,1-2-3-4", "angles:0-1-2,2-3-4"]:
        m = parse_map(spec, n_atoms=5)
        xs = m.select(x).reshape(10, -1)

        def f(v):
            return m._single(v.reshape(-1, 3))

        torch.testing.assert_close(vmap(jacfwd(f))(xs), vmap(jacrev(f))(xs))


def test_full_jacobian_is_zero_on_unread_atoms():
    x = random_frames(4, 6)
    m = parse_map("angles:1-3-5", n_atoms=6)
    j = m.jacobian(x)
    assert j.shape == (4, 1, 6, 3)
    assert torch.all(j[:, :, [0, 2, 4]] == 0) and torch.all(j[:, :, [1, 3, 5]].abs().sum((1, 3)) > 0)


def test_linear_map_mass_is_constant_and_matches_matrix():
    masses = torch.tensor([12.0, 1.0, 16.0, 14.0], dtype=torch.float64)
    groups = [[0, 1], [1, 2], [2, 3]]  # overlapping rows
    m = LinearMap.from_centers_of_mass(groups, masses)
    x = random_frames(30, 4)
    a = effective_mass(m, x, masses)
    xi = m.matrix
    expected = torch.kron(xi @ torch.diag(1 / masses[list(m.atoms)]) @ xi.T, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(a, expected.expand(30, -1, -1))
    assert float(a[0, 0, 3]) != 0.0  # non-disjoint rows give off-diagonal terms
    com = m(x).reshape(30, 3, 3)
    torch.testing.assert_close(com[:, 0], (12 * x[:, 0] + 1 * x[:, 1]) / 13)


def test_pca_map_recovers_dominant_direction():
    gen = torch.Generator().manual_seed(1)
    x = torch.zeros(400, 3, 3, dtype=torch.float64)
    t = torch.randn(400, generator=gen, dtype=torch.float64)
    x[:, 0, 0] = 0.3 * t  # atom 0 moves along x relative to the others
    x = x + 0.001 * torch.randn(400, 3, 3, generator=gen, dtype=torch.float64)
    m = parse_map("pca:0,1,2:1", n_atoms=3, positions=x)
    assert isinstance(m, PCAMap)
    corr = np.corrcoef(m(x)[:, 0].numpy(), t.numpy())[0, 1]
    assert abs(corr) > 0.999


def test_encoder_map_runs_any_module():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(9, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    m = EncoderMap(net, [0, 2, 4], 2, n_atoms=5)
    x = random_frames(7, 5)
    assert m(x).shape == (7, 2)
    assert effective_mass(m, x, torch.ones(5, dtype=torch.float64)).shape == (7, 2, 2)
    assert m.periodic == [False, False] and m.bounds == [None, None]


def test_encoder_map_takes_periodicity_and_bounds_from_the_module_or_the_caller():
    class Bounded(torch.nn.Module):  # a tanh output is bounded, an atan2 output periodic
        periodic, bounds = [False, True], [(-1.0, 1.0), None]

        def forward(self, flat):
            return torch.stack([torch.tanh(flat[:, 0]), torch.atan2(flat[:, 1], flat[:, 2])], dim=1)

    m = EncoderMap(Bounded(), [0, 1], 2, n_atoms=3)
    assert m.periodic == [False, True] and m.bounds[0] == (-1.0, 1.0) and m.bounds[1] is None
    q = m(random_frames(50, 3))
    assert q.dtype == torch.float64 and float(q[:, 0].abs().max()) < 1.0
    m = EncoderMap(Bounded(), [0, 1], 2, n_atoms=3, periodic=[False, False], bounds=[None, (-4.0, 4.0)])
    assert m.periodic == [False, False] and m.bounds == [None, (-4.0, 4.0)]
    with pytest.raises(ValueError, match="bounds"):
        EncoderMap(Bounded(), [0, 1], 2, n_atoms=3, bounds=[(1.0, -1.0), None])


def test_position_dependent_masses():
    x = random_frames(6, 3)
    m = TriangleMap(0, 1, 2)
    masses = torch.tensor([12.0, 14.0, 16.0], dtype=torch.float64)
    const = effective_mass(m, x, masses)
    per_atom = effective_mass(m, x, lambda q: masses.expand(q.shape[0], -1))
    full = effective_mass(m, x, lambda q: torch.diag(masses.repeat_interleave(3)).expand(q.shape[0], -1, -1))
    torch.testing.assert_close(per_atom, const)
    torch.testing.assert_close(full, const)
    # A genuinely position-dependent mass changes A frame by frame.
    scaled = effective_mass(m, x, lambda q: masses * (1 + q[:, :, 0] ** 2))
    assert not torch.allclose(scaled, const)


def test_spec_strings_cover_every_kind(alanine_topology):
    top = alanine_topology.topology
    n = top.n_atoms
    pos = torch.as_tensor(alanine_topology.xyz, dtype=torch.float64).expand(5, -1, -1) + 0.01 * torch.randn(5, n, 3, dtype=torch.float64)
    masses = torch.tensor([a.element.mass for a in top.atoms], dtype=torch.float64)
    phipsi = parse_map("dihedrals:phi-psi", topology=top)
    assert phipsi.names == ["phi", "psi"] and all(phipsi.periodic)
    phi_ref = md.compute_phi(alanine_topology)[1][0]
    np.testing.assert_allclose(float(phipsi(torch.as_tensor(alanine_topology.xyz, dtype=torch.float64))[0, 0]), phi_ref, atol=1e-5)
    for spec, n_cg in [("triangle:(name N or name CA or name C) and resid 1", 3), ("distances:name C", 3),
                       ("distances:0-5,5-9", 2), ("angles:4-6-8", 1), ("dihedrals:4-6-8-14", 1),
                       ("linear:name CA", 3), ("com:resid 0;resid 1;resid 2", 9), ("pca:backbone:2", 2)]:
        m = parse_map(spec, topology=top, masses=masses, positions=pos)
        assert m.n_cg == n_cg, spec
        assert m(pos).shape == (5, n_cg)
    assert select_atoms("4,1,2", topology=top) == [4, 1, 2]  # index lists keep their order


@pytest.mark.parametrize("spec,match", [
    ("nonsense", "KIND:ARGS"),
    ("banana:0,1", "unknown map kind"),
    ("triangle:0,1", "exactly 3 atoms"),
    ("distances:0-99", "out of range"),
    ("angles:0,1,2", "i-j-k"),
    ("triangle:name XX", "selects no atoms"),
    ("triangle:name CA and", "cannot parse"),
    ("dihedrals:0-1-1-2", "repeats an atom"),
    ("distances:0-1,1-0", "twice"),
    ("pca:name CA:2", "positions"),
    ("com:0,1", "masses"),
])
def test_bad_specs_are_refused_clearly(spec, match, alanine_topology):
    with pytest.raises(ValueError, match=match):
        parse_map(spec, topology=alanine_topology.topology)


def test_selection_without_topology_explains_the_fix():
    with pytest.raises(ValueError, match="comma-separated 0-based atom indices"):
        parse_map("triangle:name CA", n_atoms=10)


def test_bad_positions_and_masses_are_refused():
    m = TriangleMap(0, 1, 2, n_atoms=3)
    masses = torch.tensor([12.0, 14.0, 16.0])
    x = random_frames(5, 3)
    with pytest.raises(ValueError, match="single frame"):
        m(x[0])
    with pytest.raises(ValueError, match=r"\(n_frames, n_atoms, 3\)"):
        m(x[..., :2])
    with pytest.raises(ValueError, match="expected 3"):
        m(random_frames(5, 4))
    bad = x.clone()
    bad[3, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"frame indices 3"):
        m(bad)
    with pytest.raises(ValueError, match="2 entries but the system has 3 atoms"):
        effective_mass(m, x, masses[:2])
    with pytest.raises(ValueError, match="non-positive"):
        effective_mass(m, x, torch.tensor([12.0, 0.0, 16.0]))
    same = x.clone()
    same[2, 0] = same[2, 1]
    with pytest.raises(ValueError, match="coincide in frame 2"):
        m(same)
    line = x.clone()
    line[1] = torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [0.3, 0, 0]], dtype=x.dtype)
    with pytest.raises(ValueError, match="collinear"):
        effective_mass(m, line, masses)


def test_rank_deficient_maps_are_refused():
    x = random_frames(5, 5)
    # 10 distances among 5 atoms exceed the 9 internal degrees of freedom.
    with pytest.raises(ValueError, match="rank-deficient"):
        effective_mass(parse_map("distances:0,1,2,3,4"), x, torch.ones(5))
    with pytest.raises(ValueError, match="rank"):
        LinearMap(np.array([[1.0, 0.0], [2.0, 0.0]]), [0, 1])


def test_core_library_never_imports_the_ui():
    """Import every module of latentlab (the serve command included): no Panel, Bokeh, HoloViews or dashboard."""
    import subprocess

    code = ("import importlib, pkgutil, sys, latentlab\n"
            "names = [m.name for m in pkgutil.walk_packages(latentlab.__path__, 'latentlab.') if not m.name.endswith('__main__')]\n"
            "for name in names: importlib.import_module(name)\n"
            "assert 'latentlab.cli.serve' in names, names\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('panel', 'holoviews', 'bokeh', 'app', 'latentlab_app')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_suggested_map_reproduces_the_built_in_defaults_and_falls_back_to_the_first_atoms():
    """For a system without a default map (a user's file) the suggestion is what the built-in sets use."""
    from latentlab.data import load
    from latentlab.maps import suggested_map

    for name in ("alanine-dipeptide", "chignolin", "three-atom"):
        ds = load(name)
        assert suggested_map(ds.topology, ds.n_atoms) == ds.default_map, name
    assert suggested_map(None, 2) == "distances:0-1" and suggested_map(None, 1) == "linear:0"
    assert suggested_map(None, 5) == "triangle:0,1,2"
    # a chain without phi/psi but with CAs: first, middle and last CA; a 12-residue chain picks 0, 6, 11
    top = md.Topology()
    chain = top.add_chain()
    for r in range(12):
        top.add_atom("CA", md.element.carbon, top.add_residue("GLY", chain))
    assert suggested_map(top) == "triangle:name CA and (resid 0 6 11)"
