"""Closed-form eigen-decomposition of small symmetric matrices (the friction step's) against LAPACK."""

import pytest
import torch

from latentlab.dynamics.eigen import symmetric_eigh


def _cases(n: int, dtype) -> dict:
    g = torch.Generator().manual_seed(n)
    w = 512
    x = torch.randn(w, n, n, dtype=torch.float64, generator=g)
    rot, _ = torch.linalg.qr(torch.randn(w, n, n, dtype=torch.float64, generator=g))

    def spectrum(values):
        return rot @ torch.diag(torch.tensor(values[:n], dtype=torch.float64)) @ rot.transpose(1, 2)

    cases = {
        "random spd": x @ x.transpose(1, 2) + 0.01 * torch.eye(n, dtype=torch.float64),
        "random indefinite": x + x.transpose(1, 2),
        "pair within 1e-9": spectrum([1.0, 1.0 + 1e-9, 2.0]),
        "pair within 1e-9, other below": spectrum([2.0, 2.0 + 1e-9, 1.0]),
        "all three within 1e-12": spectrum([1.0, 1.0, 1.0 + 1e-12]),
        "condition 1e9": spectrum([1e-6, 1.0, 1e3]),
        "identity": torch.eye(n, dtype=torch.float64).expand(w, n, n).clone(),
        "diagonal": torch.diag_embed(torch.rand(w, n, dtype=torch.float64, generator=g)),
        "tiny scale": 1e-200 * (x @ x.transpose(1, 2)),
        "zero": torch.zeros(w, n, n, dtype=torch.float64),
    }
    return {k: (0.5 * (a + a.transpose(1, 2))).to(dtype) for k, a in cases.items()}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_closed_form_eigh_reconstructs_the_matrix_with_orthonormal_vectors(n, dtype):
    eps = torch.finfo(dtype).eps
    for name, a in _cases(n, dtype).items():
        w, u = symmetric_eigh(a)
        assert w.shape == a.shape[:2] and u.shape == a.shape
        size = a.abs().amax((1, 2)).clamp_min(torch.finfo(dtype).tiny)
        rebuilt = u @ torch.diag_embed(w) @ u.transpose(1, 2)
        assert float(((rebuilt - a).abs().amax((1, 2)) / size).max()) < 20 * eps, name
        assert float((u.transpose(1, 2) @ u - torch.eye(n, dtype=dtype)).abs().max()) < 20 * eps, name
        # the eigenvalues of LAPACK, to a few eps of |A| (unsorted here)
        ref = torch.linalg.eigvalsh(a.double())
        assert float(((w.double().sort(-1).values - ref).abs().amax(-1) / size.double()).max()) < 20 * eps, name


def test_closed_form_eigh_flags_non_finite_matrices_without_raising():
    a = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1)
    a[1, 0, 1] = a[1, 1, 0] = float("nan")
    a[2, 2, 2] = float("inf")
    w, _ = symmetric_eigh(a)
    finite = torch.isfinite(w).all(1)
    assert finite.tolist() == [True, False, False, True]


def test_larger_matrices_use_lapack():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 5, dtype=torch.float64, generator=g)
    a = x @ x.transpose(1, 2)
    w, u = symmetric_eigh(a)
    torch.testing.assert_close(u @ torch.diag_embed(w) @ u.transpose(1, 2), a)
