"""Mean-force estimators and force-matching targets against closed forms (docs/theory.md section 3)."""

import pytest
import torch

from latentlab.forces import force_matching_target, local_pmf_gradient
from latentlab.forces.mean_force import _frame_terms
from latentlab.maps import LinearMap, parse_map
from latentlab.testing import ThreeAtomSystem


@pytest.mark.parametrize("method", ["mass-weighted", "pseudo-inverse"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-8), (torch.float32, 2e-3)])
def test_three_atom_mean_force_equals_exact_pmf_gradient(method, dtype, tol):
    # U depends on Q only, so B grad U - kT div B equals dA_pmf/dQ frame by frame;
    # the -2kT/r entropy terms come entirely from div B.
    system = ThreeAtomSystem()
    x, f = system.sample(2000, seed=11)
    g = local_pmf_gradient(system.cg_map(), x.to(dtype), f.to(dtype), system.masses_tensor(dtype), system.kT, method=method)
    exact = system.pmf_gradient(system.cg_map()(x))
    rel = ((g.double() - exact).norm(dim=1) / exact.norm(dim=1)).max()
    assert rel <= tol


@pytest.mark.parametrize("convention,c", [("consistent", -0.5), ("eq9", 0.5), ("pmf", 0.0)])
def test_target_adds_the_log_det_term_of_each_convention(convention, c):
    system = ThreeAtomSystem()
    x, f = system.sample(500, seed=12)
    q = system.cg_map()(x).requires_grad_(True)
    (grad_logdet,) = torch.autograd.grad(torch.logdet(system.effective_mass(q)).sum(), q)
    expected = system.pmf_gradient(q.detach()) + c * system.kT * grad_logdet
    g = force_matching_target(system.cg_map(), x, f, system.masses_tensor(), system.kT, convention=convention)
    assert ((g - expected).norm(dim=1) / expected.norm(dim=1)).max() <= 1e-8


def test_linear_map_target_is_the_mapped_force():
    gen = torch.Generator().manual_seed(3)
    masses = torch.tensor([12.0, 1.0, 16.0, 14.0, 1.0], dtype=torch.float64)
    x = torch.randn(40, 5, 3, generator=gen, dtype=torch.float64)
    f = torch.randn(40, 5, 3, generator=gen, dtype=torch.float64)
    m = LinearMap.from_centers_of_mass([[0, 1], [2, 3, 4]], masses)
    g = force_matching_target(m, x, f, masses, kT=2.494)
    mapped = torch.stack([f[:, [0, 1]].sum(1), f[:, [2, 3, 4]].sum(1)], 1).reshape(40, 6)
    torch.testing.assert_close(g, -mapped)  # grad V = -(sum of forces on each bead)
    s = parse_map("linear:1,3", n_atoms=5)
    torch.testing.assert_close(force_matching_target(s, x, f, masses, kT=2.494), -f[:, [1, 3]].reshape(40, 6))


def test_batched_terms_match_a_per_frame_loop():
    # Guards against vmap/forward-AD problems (solve under vmap(jacfwd) gave wrong results in torch 2.13).
    gen = torch.Generator().manual_seed(5)
    base = torch.tensor([[0.0, 0, 0], [0.15, 0, 0], [0.2, 0.14, 0], [0.35, 0.15, 0.1], [0.45, 0.3, 0.1]], dtype=torch.float64)
    x = base + 0.02 * torch.randn(16, 5, 3, generator=gen, dtype=torch.float64)
    f = torch.randn(16, 5, 3, generator=gen, dtype=torch.float64)
    masses = torch.tensor([12.0, 14.0, 12.0, 16.0, 14.0], dtype=torch.float64)
    m = parse_map("dihedrals:0-1-2-3,1-2-3-4", n_atoms=5)
    batched = force_matching_target(m, x, f, masses, kT=2.5)
    loop = torch.cat([force_matching_target(m, x[i:i + 1], f[i:i + 1], masses, kT=2.5) for i in range(16)])
    torch.testing.assert_close(batched, loop, rtol=1e-10, atol=1e-10)
    terms = _frame_terms(m, "mass-weighted", True, True)
    minv = (1 / masses[list(m.atoms)]).repeat_interleave(3)
    b, _, _ = terms(m.select(x)[0].reshape(-1), minv)
    jac = m.jacobian_read(m.select(x)[:1])[0].reshape(2, -1)
    torch.testing.assert_close(b @ jac.T, torch.eye(2, dtype=torch.float64))  # B J^T = I


def test_both_b_choices_agree_in_expectation_for_an_inconsistent_map():
    # For a single bond angle of the three-atom system (inconsistent map), the two
    # estimators differ frame by frame but their binned means agree.
    system = ThreeAtomSystem()
    x, f = system.sample(40000, seed=13)
    m = parse_map("angles:0-1-2", n_atoms=3)
    g1 = local_pmf_gradient(m, x, f, system.masses_tensor(), system.kT, method="mass-weighted")[:, 0]
    g2 = local_pmf_gradient(m, x, f, system.masses_tensor(), system.kT, method="pseudo-inverse")[:, 0]
    theta = m(x)[:, 0]
    assert not torch.allclose(g1, g2)
    bins = torch.linspace(1.2, 1.95, 6, dtype=torch.float64)
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (theta >= lo) & (theta < hi)
        d = g1[sel] - g2[sel]
        assert abs(float(d.mean())) < 4 * float(d.std()) / sel.sum().sqrt() + 1e-9


def test_bad_force_input_is_refused():
    system = ThreeAtomSystem()
    x, f = system.sample(10, seed=1)
    m = system.cg_map()
    with pytest.raises(ValueError, match="forces: has 9 frames but positions has 10"):
        local_pmf_gradient(m, x, f[:9], system.masses_tensor(), system.kT)
    with pytest.raises(ValueError, match="forces: has 2 atoms"):
        local_pmf_gradient(m, x, f[:, :2], system.masses_tensor(), system.kT)
    with pytest.raises(ValueError, match="kT"):
        local_pmf_gradient(m, x, f, system.masses_tensor(), -1.0)
    with pytest.raises(ValueError, match="method"):
        local_pmf_gradient(m, x, f, system.masses_tensor(), 2.5, method="magic")
    with pytest.raises(ValueError, match="convention"):
        force_matching_target(m, x, f, system.masses_tensor(), 2.5, convention="mine")


def test_the_old_convention_name_still_works_with_a_deprecation_warning():
    from latentlab.conventions import canonical, logdet_coefficient

    with pytest.warns(DeprecationWarning, match="use 'eq9'"):
        assert canonical("seed_eq9") == "eq9"
    with pytest.raises(ValueError, match="unknown convention"):
        logdet_coefficient("eq10")
