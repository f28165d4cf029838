"""The rigid-rotation mean-force estimator for dihedral maps (latentlab/forces/torsion.py)."""

import math

import numpy as np
import pytest
import torch

from latentlab.forces import local_pmf_gradient
from latentlab.forces.torsion import rotation_fields, torsion_pmf_gradient
from latentlab.maps import parse_map


@pytest.fixture(scope="module")
def alanine():
    from latentlab.data import load

    return load("alanine-dipeptide")


@pytest.fixture(scope="module")
def alanine_topology(alanine):
    """The built-in set's mdtraj topology (with bonds)."""
    return alanine.topology


def _bonded_terms(x, topology, gen):
    """Harmonic bonds and angles over the topology (random constants): invariant under the rigid rotations."""
    bonds = torch.tensor([[b[0].index, b[1].index] for b in topology.bonds])
    neighbours = {}
    for a, b in bonds.tolist():
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    angles = torch.tensor([[a, j, c] for j, ns in neighbours.items() for ia, a in enumerate(ns) for c in ns[ia + 1:]])
    kb = 1e5 * (1 + torch.rand(len(bonds), generator=gen, dtype=torch.float64))
    ka = 300 * (1 + torch.rand(len(angles), generator=gen, dtype=torch.float64))
    r = torch.linalg.vector_norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], dim=-1)
    u = (kb * (r - 0.12) ** 2).sum(-1)
    e1 = x[:, angles[:, 0]] - x[:, angles[:, 1]]
    e2 = x[:, angles[:, 2]] - x[:, angles[:, 1]]
    cos = (e1 * e2).sum(-1) / (torch.linalg.vector_norm(e1, dim=-1) * torch.linalg.vector_norm(e2, dim=-1))
    return u + (ka * (cos + 0.35) ** 2).sum(-1)


def test_estimator_is_exact_frame_by_frame_when_only_bonded_terms_and_the_torsions_act(alanine_topology):
    # U = bonds + angles (any constants) + torsion terms in phi and psi.  Bonds and angles do not
    # change under the rigid rotations, so g = dU_torsion/d(phi, psi) in every frame, not only on average.
    from latentlab.data import load

    ds = load("alanine-dipeptide")
    cg_map = parse_map("dihedrals:phi-psi", topology=alanine_topology)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.as_tensor(ds.positions[:200], dtype=torch.float64)
    x = (x0 + 0.003 * torch.randn(x0.shape, generator=gen, dtype=torch.float64)).requires_grad_(True)
    q = cg_map(x)
    u = _bonded_terms(x, alanine_topology, gen) + 7.0 * torch.cos(q[:, 0] - 0.4) + 3.0 * torch.cos(2 * q[:, 1])
    (grad_u,) = torch.autograd.grad(u.sum(), x)
    exact = torch.stack([-7.0 * torch.sin(q[:, 0] - 0.4), -6.0 * torch.sin(2 * q[:, 1])], 1).detach()
    g = torsion_pmf_gradient(cg_map, x.detach(), -grad_u, alanine_topology)
    assert torch.allclose(g, exact, atol=1e-6 * float(grad_u.abs().max()))
    # The four-atom estimator is unbiased too, but not exact frame by frame (the bond forces leak in).
    g4 = local_pmf_gradient(cg_map, x.detach(), -grad_u, torch.as_tensor(ds.masses), ds.kT)
    assert (g4 - exact).abs().max() > 100 * (g - exact).abs().max()


def test_binned_means_agree_with_the_mass_weighted_estimator_and_the_noise_is_lower():
    # Both estimators have the same conditional mean at fixed Q (grad A_pmf): in every bin of Q the
    # mean of their frame-wise difference must vanish within its standard error (bins with >= 200
    # frames; the error from the difference's own variance and integrated autocorrelation time in
    # time order, so nothing about the data's correlations is assumed).
    from latentlab.data import load
    from latentlab.dynamics.statistics import mean_and_stderr

    ds = load("alanine-dipeptide")
    cg_map = ds.map("dihedrals:phi-psi")
    pos, frc = ds.tensors(torch.float64)
    g_rot = torsion_pmf_gradient(cg_map, pos, frc, ds.topology).numpy()
    g_mw = local_pmf_gradient(cg_map, pos, frc, torch.as_tensor(ds.masses), ds.kT).numpy()
    assert (g_rot.std(0) < 0.6 * g_mw.std(0)).all()
    q = cg_map(pos).numpy()
    bins = 12
    idx = np.clip(((q + math.pi) / (2 * math.pi) * bins).astype(int), 0, bins - 1)
    flat = idx[:, 0] * bins + idx[:, 1]
    z = []
    for b in np.unique(flat):
        sel = flat == b
        if sel.sum() < 200:
            continue
        for d in range(2):
            mean, err, _ = mean_and_stderr((g_rot[sel, d] - g_mw[sel, d])[:, None])
            z.append(mean / err)
    z = np.asarray(z)
    assert len(z) >= 16
    assert np.abs(z).max() < 4.0


def test_fields_move_the_smaller_side_and_do_not_rotate_the_other_dihedral(alanine_topology):
    cg_map = parse_map("dihedrals:phi-psi", topology=alanine_topology)
    phi, psi = rotation_fields(cg_map, alanine_topology)
    names = [a.name for a in alanine_topology.atoms]
    assert phi.axis == (6, 8) and psi.axis == (8, 10)
    assert sorted(names[a] for a in phi.moving) == sorted(["CH3", "H1", "H2", "H3", "C", "O", "H"])
    assert 16 in psi.moving and 4 not in psi.moving and 12 not in psi.moving  # NME side, not the CB side
    # grad xi . v is +-1 for the own dihedral and 0 for the other one
    from latentlab.data import load

    x = torch.as_tensor(load("alanine-dipeptide").positions[:5], dtype=torch.float64)
    jac = cg_map.jacobian(x)
    for n, field in enumerate((phi, psi)):
        j, k = field.axis
        e = (x[:, k] - x[:, j]) / torch.linalg.vector_norm(x[:, k] - x[:, j], dim=-1, keepdim=True)
        v = torch.zeros_like(x)
        mv = list(field.moving)
        v[:, mv] = torch.cross(e[:, None].expand(-1, len(mv), -1), x[:, mv] - x[:, j, None], dim=-1)
        c = (jac * v[:, None]).sum((2, 3))  # (F, 2)
        assert torch.allclose(c[:, n].abs(), torch.ones(5, dtype=torch.float64), atol=1e-12)
        assert torch.allclose(c[:, 1 - n], torch.zeros(5, dtype=torch.float64), atol=1e-12)


def _ring_topology():
    """Cyclohexane-like ring of 6 carbons with one methyl: every ring bond is in a ring."""
    import mdtraj as md

    top = md.Topology()
    res = top.add_residue("CYC", top.add_chain())
    atoms = [top.add_atom(f"C{i}", md.element.carbon, res) for i in range(7)]
    for i in range(6):
        top.add_bond(atoms[i], atoms[(i + 1) % 6])
    top.add_bond(atoms[0], atoms[6])
    return top


def test_clear_errors_for_rings_missing_bonds_and_other_maps(alanine_topology):
    ring = _ring_topology()
    with pytest.raises(ValueError, match="in a ring.*mass-weighted"):
        rotation_fields(parse_map("dihedrals:6-0-1-2", n_atoms=7), ring)
    with pytest.raises(ValueError, match="not a bond"):
        rotation_fields(parse_map("dihedrals:0-1-3-4", n_atoms=7), ring)
    with pytest.raises(ValueError, match="only of dihedrals"):
        rotation_fields(parse_map("distances:4,10", n_atoms=22), alanine_topology)
    import mdtraj as md

    bare = md.Topology()
    res = bare.add_residue("X", bare.add_chain())
    for i in range(22):
        bare.add_atom(f"A{i}", md.element.carbon, res)
    with pytest.raises(ValueError, match="topology with bonds"):
        rotation_fields(parse_map("dihedrals:phi-psi", topology=alanine_topology), bare)


def test_auto_method_picks_rigid_rotation_for_dihedrals_and_mass_weighted_otherwise():
    from latentlab.data import load
    from latentlab.forces import resolve_method

    ala = load("alanine-dipeptide")
    assert resolve_method("auto", ala.map("dihedrals:phi-psi"), ala)[0] == "rigid-rotation"
    method, reason = resolve_method("auto", ala.map("distances:4,10"), ala)
    assert method == "mass-weighted" and "not made of dihedrals" in reason
    assert resolve_method("pseudo-inverse", ala.map("dihedrals:phi-psi"), ala) == ("pseudo-inverse", "asked for")
    bare = ala.select_frames(slice(0, 10))
    bare.topology = None
    assert resolve_method("auto", ala.map("dihedrals:phi-psi"), bare) == (
        "mass-weighted", "the data set has no topology, so its bonds are unknown")
    with pytest.raises(ValueError, match="unknown method"):
        resolve_method("fast", ala.map("dihedrals:phi-psi"), ala)
