"""Grid interpolants: convergence orders, periodic continuity, exact derivatives (finite differences,
reverse- and forward-mode AD), positive-definite matrix tables, dtypes, devices, serialisation, errors."""

import io
import math

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD

from latentlab.interpolation import DEFAULT_POINTS, GridInterpolant, TableCells, grid_points

from conftest import DEVICES

PI = math.pi


# ---------------------------------------------------------------------------- analytic test functions
def periodic_1d(q):
    return torch.sin(2 * q[:, 0]) + 0.5 * torch.cos(3 * q[:, 0] + 0.3)


def periodic_2d(q):
    return torch.sin(q[:, 0]) * torch.cos(2 * q[:, 1]) + 0.3 * torch.sin(q[:, 0] + q[:, 1])


def bounded_1d(q):
    return torch.exp(q[:, 0]) * torch.sin(3 * q[:, 0])


def bounded_3d(q):
    return torch.sin(2 * q[:, 0]) * torch.cos(q[:, 1]) * torch.exp(0.5 * q[:, 2])


def mixed_2d(q):  # coordinate 0 periodic (rad), coordinate 1 bounded
    return torch.cos(q[:, 0] - 0.4) * (1.0 + q[:, 1] ** 2) + torch.sin(2 * q[:, 0]) * q[:, 1]


def spd_3x3(q):
    """A smooth symmetric positive-definite matrix function of 3 coordinates."""
    x, y, z = q[:, 0], q[:, 1], q[:, 2]
    rows = [[2 + torch.sin(x), 0.3 * torch.cos(y), 0.1 * z],
            [0.3 * torch.cos(y), 1.5 + 0.5 * torch.cos(x * y), 0.2 * torch.sin(z)],
            [0.1 * z, 0.2 * torch.sin(z), 1 + z * z]]
    return torch.stack([torch.stack(r, -1) for r in rows], -2)


def exact_gradient(f, q):
    q = q.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(q).sum(), q)
    return g


def uniform_points(n, bounds, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    lo = torch.tensor([b[0] for b in bounds], dtype=dtype)
    hi = torch.tensor([b[1] for b in bounds], dtype=dtype)
    return lo + (hi - lo) * torch.rand(n, len(bounds), generator=g, dtype=dtype)


def observed_orders(f, bounds, periodic, sizes, method="bspline", n_test=20000):
    """log2 of successive max-error ratios (value, gradient) over random points, grids doubling in size."""
    box = [b if b is not None else (-PI, PI) for b in bounds]
    q = uniform_points(n_test, box)
    exact, exact_g = f(q), exact_gradient(f, q)
    errors = []
    for n in sizes:
        table = GridInterpolant.from_function(f, bounds, periodic, n, method=method)
        v, g = table.value_and_grad(q)
        errors.append(((v - exact).abs().max().item(), (g - exact_g).abs().max().item()))
    e = np.array(errors)
    return np.log2(e[:-1] / e[1:]), e


# ---------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("f, bounds, periodic, sizes", [
    (periodic_1d, [None], [True], [32, 64, 128]),
    (bounded_1d, [(-1.0, 1.3)], [False], [32, 64, 128]),
    (periodic_2d, [None, None], [True, True], [32, 64, 128]),
    (mixed_2d, [None, (-1.0, 2.0)], [True, False], [32, 64, 128]),
    (bounded_3d, [(-1.0, 1.0), (-0.5, 1.5), (0.0, 1.0)], [False] * 3, [12, 24, 48]),
], ids=["periodic-1d", "bounded-1d", "periodic-2d", "mixed-2d", "bounded-3d"])
def test_bspline_error_falls_at_fourth_order_and_its_gradient_at_third(f, bounds, periodic, sizes):
    # Interpolating cubic B-spline (not-a-knot ends): |error| ~ C dx^4, |grad error| ~ C dx^3.
    orders, errors = observed_orders(f, bounds, periodic, sizes)
    assert np.all(np.abs(orders[:, 0] - 4.0) < 0.45), (orders, errors)
    assert np.all(np.abs(orders[:, 1] - 3.0) < 0.45), (orders, errors)


def test_catmull_rom_error_falls_at_third_order_and_its_gradient_at_second():
    for f, bounds, periodic in [(periodic_1d, [None], [True]), (bounded_1d, [(-1.0, 1.3)], [False]),
                                (periodic_2d, [None, None], [True, True])]:
        orders, errors = observed_orders(f, bounds, periodic, [32, 64, 128], method="catmull-rom")
        assert np.all(np.abs(orders[:, 0] - 3.0) < 0.45), (f.__name__, orders, errors)
        assert np.all(np.abs(orders[:, 1] - 2.0) < 0.45), (f.__name__, orders, errors)


@pytest.mark.parametrize("method", ["bspline", "catmull-rom"])
@pytest.mark.parametrize("periodic", [[True, False], [False, True]])
def test_interpolant_passes_through_the_samples(method, periodic):
    bounds = [None if p else (-1.0, 2.0) for p in periodic]
    n_points = [13, 9]
    axes = grid_points(bounds, periodic, n_points)
    grid = torch.cartesian_prod(*axes)
    values = torch.randn(len(grid), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    table = GridInterpolant.from_samples(values.reshape(n_points), bounds, periodic, method=method)
    assert torch.allclose(table(grid), values, rtol=0, atol=1e-12)


def test_grid_points_cover_the_box_as_documented():
    x_per, x_bnd = grid_points([None, (0.0, 1.0)], [True, False], [8, 5])
    assert torch.allclose(x_per, -PI + torch.arange(8, dtype=torch.float64) * (2 * PI / 8))
    assert torch.allclose(x_bnd, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------------------- periodicity and the box edge
@pytest.mark.parametrize("method", ["bspline", "catmull-rom"])
def test_periodic_value_and_gradient_are_continuous_across_pi(method):
    table = GridInterpolant.from_function(periodic_2d, None, [True, True], 48, method=method)
    y = torch.linspace(-PI, PI, 101, dtype=torch.float64)
    eps = 1e-9
    for d in range(2):
        below, above = torch.zeros(101, 2, dtype=torch.float64), torch.zeros(101, 2, dtype=torch.float64)
        below[:, 1 - d] = above[:, 1 - d] = y
        below[:, d], above[:, d] = PI - eps, -PI + eps
        v_b, g_b = table.value_and_grad(below)
        v_a, g_a = table.value_and_grad(above)
        scale_v, scale_g = v_b.abs().max(), g_b.abs().max()
        # across the seam the two points are 2 eps apart: values differ by ~2 eps |grad|, gradients by ~2 eps |hessian|
        assert (v_b - v_a).abs().max() < 10 * eps * scale_g + 1e-13 * scale_v
        hessian_bound = 48**2 / (2 * PI) ** 2 * 8 * float(table.coefficients.abs().max())
        assert (g_b - g_a).abs().max() < 10 * eps * hessian_bound + 1e-12 * scale_g
    # whole turns change nothing
    q = uniform_points(1000, [(-PI, PI)] * 2, seed=3)
    shift = torch.tensor([2 * PI, -4 * PI], dtype=torch.float64)
    v0, g0 = table.value_and_grad(q)
    v1, g1 = table.value_and_grad(q + shift)
    assert torch.allclose(v0, v1, atol=1e-12) and torch.allclose(g0, g1, atol=1e-10)


@pytest.mark.parametrize("extrapolation", ["linear", "constant"])
def test_continuation_outside_the_box_is_c1_and_as_documented(extrapolation):
    table = GridInterpolant.from_function(bounded_1d, [(-1.0, 1.3)], [False], 64, extrapolation=extrapolation)
    hi = torch.tensor([[1.3]], dtype=torch.float64)
    v_hi, g_hi = table.value_and_grad(hi)
    d = 1e-8
    v_in, g_in = table.value_and_grad(hi - d)
    v_out, g_out = table.value_and_grad(hi + d)
    assert abs(float(v_out - v_in)) < 4 * d * abs(float(g_hi)) + 1e-12
    assert abs(float(g_out - g_in)) < 1e-5 * abs(float(g_hi))  # continuous slope (the curvature jumps, bounded)
    far = hi + torch.tensor([[0.1], [1.0], [10.0]], dtype=torch.float64)
    v_far, g_far = table.value_and_grad(far)
    dx = 2.3 / 63
    if extrapolation == "linear":
        expected = v_hi + g_hi[:, 0] * (far[:, 0] - 1.3)
        assert torch.allclose(v_far, expected, atol=1e-12)
        assert torch.allclose(g_far, g_hi.expand(3, 1), atol=1e-12)
    else:  # f(hi) + f'(hi) dx tanh((x - hi) / dx): levels off about one grid spacing out
        expected = v_hi + g_hi[:, 0] * dx * torch.tanh((far[:, 0] - 1.3) / dx)
        assert torch.allclose(v_far, expected, atol=1e-12)
        assert float(g_far[-1].abs()) < 1e-12 * float(g_hi.abs())


# ---------------------------------------------------------------------------- derivatives
def fd_tolerance(table, eps, values):
    """Bound on |central difference - derivative|: truncation eps^2/6 max|f'''| plus round-off.

    A cubic B-spline has |f'''| <= 8 max|c| / dx^3 along each coordinate (third-difference weights
    1, 3, 3, 1 over dx^3); the linear continuation adds nothing; tanh adds at most 2 |f'| / dx^2."""
    per = torch.tensor(table.periodic)
    n = torch.tensor(table.n_points, dtype=torch.float64)
    width = torch.tensor([b[1] - b[0] for b in table.bounds], dtype=torch.float64)
    dx = float((width / torch.where(per, n, n - 1)).min())
    third = 8 * float(table.coefficients.abs().max()) / dx**3 * 4  # x4: product with the other coordinates' weights
    if table.positive_definite:  # A = L L^T with L_ii = exp(.): chain rule, bounded by the values' scale
        third *= 50 * float(values.abs().max())
    return eps**2 / 6 * third + 8 * torch.finfo(torch.float64).eps * float(values.abs().max()) / eps


@pytest.mark.parametrize("case", ["scalar-periodic", "scalar-bounded-linear", "spd-constant", "spd-linear", "matrix-plain"])
def test_derivatives_equal_central_differences_inside_and_outside_the_box(case):
    if case.startswith("scalar"):
        table = GridInterpolant.from_function(mixed_2d if "periodic" in case else bounded_3d,
                                              [None, (-1.0, 2.0)] if "periodic" in case else [(-1, 1), (-0.5, 1.5), (0, 1)],
                                              [True, False] if "periodic" in case else [False] * 3, 24)
    else:
        ex = "constant" if "constant" in case else "linear"
        table = GridInterpolant.from_function(spd_3x3, [(-1, 1), (-1, 1.5), (-1, 1)], [False] * 3, [20, 18, 22],
                                              positive_definite=case.startswith("spd"), extrapolation=ex)
    box = [(-PI, PI) if p else b for p, b in zip(table.periodic, table.bounds)]
    wide = [(a - 0.5 * (b - a), b + 0.5 * (b - a)) for a, b in box]  # a third of the points outside
    q = uniform_points(500, wide, seed=5)
    value, jac = table.value_and_jacobian(q)
    eps = 1e-6
    tol = fd_tolerance(table, eps, value)
    for k in range(table.n_dim):
        step = torch.zeros(table.n_dim, dtype=torch.float64)
        step[k] = eps
        fd = (table(q + step) - table(q - step)) / (2 * eps)
        assert (fd - jac[..., k]).abs().max() < tol, (k, float((fd - jac[..., k]).abs().max()), tol)


def test_spline_derivative_matches_the_analytic_derivative_of_the_function():
    table = GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 32, positive_definite=True)
    q = uniform_points(300, [(-1, 1)] * 3, seed=2)
    value, jac = table.value_and_jacobian(q)
    exact = torch.func.vmap(torch.func.jacfwd(lambda x: spd_3x3(x[None])[0]))(q)
    # third-order error: at dx = 2/31 a few 1e-4 relative to |dA| ~ 1
    assert (jac - exact).abs().max() < 2e-3
    assert (value - spd_3x3(q)).abs().max() < 2e-5


@pytest.mark.parametrize("positive_definite", [False, True])
def test_reverse_and_forward_mode_ad_equal_the_analytic_jacobian(positive_definite):
    if positive_definite:
        table = GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 16, positive_definite=True)
    else:
        table = GridInterpolant.from_function(mixed_2d, [None, (-1.0, 2.0)], [True, False], 32)
    box = [(-4.0, 4.0)] * table.n_dim
    q = uniform_points(400, box, seed=7)
    value, jac = table.value_and_jacobian(q)
    # reverse mode: gradient of a weighted sum of the outputs
    weights = torch.randn(value.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    qr = q.clone().requires_grad_(True)
    out = table(qr)
    (grad,) = torch.autograd.grad((out * weights).sum(), qr)
    expected = (jac * weights[..., None]).reshape(q.shape[0], -1, table.n_dim).sum(1)
    assert torch.allclose(out.detach(), value, rtol=0, atol=1e-13)
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-12)
    # forward mode, one random direction, and the stacked unit tangents the sampler uses for dA/dQ
    tangent = torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    primal, directional = table.jvp(q, tangent)
    assert torch.allclose(primal, value, atol=1e-13)
    assert torch.allclose(directional, (jac * tangent.reshape((q.shape[0],) + (1,) * len(table.value_shape) + (-1,))).sum(-1),
                          rtol=1e-12, atol=1e-12)
    w, n = q.shape
    with fwAD.dual_level():
        stacked = fwAD.unpack_dual(table(fwAD.make_dual(q.repeat(n, 1), torch.eye(n, dtype=q.dtype).repeat_interleave(w, 0))))
    stacked = stacked.tangent.reshape((n, w) + table.value_shape).movedim(0, -1)
    assert torch.allclose(stacked, jac, rtol=1e-12, atol=1e-12)


def test_potential_gradient_by_autograd_and_its_hessian_are_exact():
    table = GridInterpolant.from_function(mixed_2d, [None, (-1.0, 2.0)], [True, False], 32)
    q = uniform_points(200, [(-4.0, 4.0)] * 2, seed=6).requires_grad_(True)
    (g,) = torch.autograd.grad(table(q).sum(), q, create_graph=True)
    assert torch.allclose(g.detach(), table.value_and_grad(q)[1], rtol=1e-13, atol=1e-13)
    hessian = torch.stack([torch.autograd.grad(g[:, k].sum(), q, retain_graph=True)[0] for k in range(2)], 1)
    eps = 1e-6
    for k in range(2):  # central differences of the analytic gradient (C2 spline, C1 continuation)
        step = torch.zeros(2, dtype=torch.float64)
        step[k] = eps
        fd = (table.value_and_grad(q.detach() + step)[1] - table.value_and_grad(q.detach() - step)[1]) / (2 * eps)
        assert torch.allclose(hessian[:, :, k], fd, atol=1e-6 * float(fd.abs().max()) + 1e-8)
    assert torch.allclose(hessian, hessian.transpose(1, 2), atol=1e-10)


# ---------------------------------------------------------------------------- positive-definite matrices
def test_cholesky_table_stays_positive_definite_where_a_plain_spline_does_not():
    # Positive samples with a narrow dip: the interpolating spline rings below zero between the two small
    # samples, so a plain matrix table loses positivity; the Cholesky table (log diagonal) cannot.
    f = torch.ones(16, dtype=torch.float64)
    f[7] = f[8] = 1e-3
    samples = torch.zeros(16, 2, 2, dtype=torch.float64)
    samples[:, 0, 0], samples[:, 1, 1] = f, 1.0
    x = torch.linspace(-5.0, 20.0, 5001, dtype=torch.float64)[:, None]
    plain = GridInterpolant.from_samples(samples, [(0.0, 15.0)], [False])
    safe = GridInterpolant.from_samples(samples, [(0.0, 15.0)], [False], positive_definite=True)
    assert float(torch.linalg.eigvalsh(plain(x))[:, 0].min()) < 0.0
    assert float(torch.linalg.eigvalsh(safe(x))[:, 0].min()) > 0.0
    assert torch.allclose(safe(torch.arange(16, dtype=torch.float64)[:, None]), samples, atol=1e-12)


@pytest.mark.parametrize("extrapolation", ["linear", "constant"])
def test_spd_table_is_symmetric_positive_definite_at_random_points(extrapolation):
    table = GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 24, positive_definite=True,
                                          extrapolation=extrapolation)
    q = uniform_points(20000, [(-3, 3)] * 3, seed=11)  # most points outside the box
    a, da = table.value_and_jacobian(q)
    assert torch.equal(a, a.transpose(1, 2)) and torch.equal(da, da.transpose(1, 2))
    assert float(torch.linalg.eigvalsh(a)[:, 0].min()) > 0.0
    assert bool(torch.isfinite(da).all())


def test_logdet_of_a_cholesky_table_is_the_logdet_of_its_values_with_exact_gradient():
    table = GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 12, positive_definite=True)
    q = uniform_points(300, [(-2, 2)] * 3, seed=8)
    logdet, grad = table.logdet_and_grad(q)
    qr = q.clone().requires_grad_(True)
    expected = torch.logdet(table(qr))
    (expected_grad,) = torch.autograd.grad(expected.sum(), qr)
    assert torch.allclose(logdet, expected.detach(), atol=1e-12)
    assert torch.allclose(grad, expected_grad, atol=1e-10)
    with pytest.raises(ValueError, match="does not hold a Cholesky factor"):
        GridInterpolant.from_function(periodic_1d, [None], [True], 8).logdet_and_grad(q[:, :1])


def test_non_positive_definite_samples_are_refused_for_a_cholesky_table():
    bad = torch.eye(2, dtype=torch.float64).repeat(8, 1, 1)
    bad[3, 1, 1] = -1.0
    with pytest.raises(ValueError, match="not positive definite at 1 grid points"):
        GridInterpolant.from_samples(bad, [(0.0, 1.0)], [False], positive_definite=True)
    asym = torch.eye(2, dtype=torch.float64).repeat(8, 1, 1)
    asym[2, 0, 1] = 0.5
    with pytest.raises(ValueError, match="not symmetric"):
        GridInterpolant.from_samples(asym, [(0.0, 1.0)], [False], positive_definite=True)


# ---------------------------------------------------------------------------- dtypes, devices, batching, storage
@pytest.mark.parametrize("device", DEVICES)
def test_float32_evaluation_agrees_with_float64_to_float32_precision(device):
    table = GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 20, positive_definite=True).to(device)
    q64 = uniform_points(2000, [(-1.5, 1.5)] * 3, seed=4).to(device)
    a64, da64 = table.value_and_jacobian(q64)
    a32, da32 = table.value_and_jacobian(q64.float())
    assert a32.dtype == da32.dtype == torch.float32 and a32.device == q64.device
    eps32 = torch.finfo(torch.float32).eps
    # inputs rounded to float32 move Q by ~eps |Q|; the sums carry ~64 terms of |c| ~ max|coef| each
    inv_dx = 19 / 2.0
    tol_a = 200 * eps32 * float(a64.abs().max())
    tol_da = 200 * eps32 * float(a64.abs().max()) * inv_dx + float(da64.abs().max()) * 4 * eps32 * 1.5 * inv_dx
    assert float((a32.double() - a64).abs().max()) < tol_a
    assert float((da32.double() - da64).abs().max()) < tol_da


def test_results_do_not_depend_on_how_walkers_are_batched():
    table = GridInterpolant.from_function(bounded_3d, [(-1, 1), (-0.5, 1.5), (0, 1)], [False] * 3, 16)
    q = uniform_points(257, [(-2, 2)] * 3, seed=9)
    v, g = table.value_and_grad(q)
    v1, g1 = zip(*(table.value_and_grad(q[i:i + 1]) for i in range(0, 257, 32)))
    assert torch.equal(torch.cat(v1), v[::32]) and torch.equal(torch.cat(g1), g[::32])
    assert table.value_and_grad(q[:0])[0].shape == (0,)


def test_round_trip_through_a_weights_only_torch_file_gives_identical_values():
    for table in [GridInterpolant.from_function(mixed_2d, [None, (-1.0, 2.0)], [True, False], 20, method="catmull-rom"),
                  GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 8, positive_definite=True,
                                                extrapolation="constant", dtype=torch.float32)]:
        buffer = io.BytesIO()
        torch.save({"table": table.to_dict()}, buffer)
        buffer.seek(0)
        loaded = GridInterpolant.from_dict(torch.load(buffer, weights_only=True)["table"])
        q = uniform_points(300, [(-3, 3)] * table.n_dim, seed=1)
        for a, b in zip(table.value_and_jacobian(q), loaded.value_and_jacobian(q)):
            assert torch.equal(a, b)
        assert loaded.extra_repr() == table.extra_repr()
        assert loaded.coefficients.dtype == table.coefficients.dtype


def test_module_to_changes_the_table_dtype_and_state_dict_round_trips():
    table = GridInterpolant.from_function(periodic_1d, [None], [True], 64)
    q = uniform_points(100, [(-PI, PI)], seed=2)
    before = table(q)
    table.to(torch.float32)
    assert table.coefficients.dtype == torch.float32
    assert (table(q) - before).abs().max() < 1e-5  # float32 table, float64 evaluation
    clone = GridInterpolant.from_function(lambda x: torch.cos(x[:, 0]), [None], [True], 64)
    clone(q)  # fills its cache of cast tables, which loading must invalidate
    clone.load_state_dict(table.state_dict())
    assert torch.equal(clone(q), table(q))


def test_from_function_is_independent_of_the_chunk_size_and_matches_from_samples():
    calls = []

    def f(q):
        calls.append(q.shape[0])
        return spd_3x3(q)

    a = GridInterpolant.from_function(f, [(-1, 1)] * 3, [False] * 3, 6, chunk_size=50)
    assert max(calls) == 50 and sum(calls) == 6**3
    axes = grid_points([(-1, 1)] * 3, [False] * 3, 6)
    samples = spd_3x3(torch.cartesian_prod(*axes)).reshape(6, 6, 6, 3, 3)
    b = GridInterpolant.from_samples(samples, [(-1, 1)] * 3, [False] * 3)
    assert torch.equal(a.coefficients, b.coefficients) and a.value_shape == (3, 3)


def test_default_grid_sizes_by_dimension():
    table = GridInterpolant.from_function(periodic_2d, None, [True, True])
    assert table.n_points == [DEFAULT_POINTS[2]] * 2
    assert DEFAULT_POINTS == {1: 2048, 2: 256, 3: 48}


def test_non_finite_coordinates_give_nan_not_an_index_error():
    table = GridInterpolant.from_function(mixed_2d, [None, (-1.0, 2.0)], [True, False], 16)
    q = torch.tensor([[float("nan"), 0.0], [0.0, float("nan")], [float("inf"), 0.0]], dtype=torch.float64)
    v, g = table.value_and_grad(q)
    assert bool(torch.isnan(v).all())


@pytest.mark.parametrize("f, bounds, periodic, extrapolation, value_shape", [
    (periodic_2d, [None, None], [True, True], "linear", ()),
    (mixed_2d, [None, (-1.0, 2.0)], [True, False], "linear", ()),
    (bounded_1d, [(-1.0, 1.3)], [False], "constant", ()),
    (spd_3x3, [(-1.0, 1.0), (0.0, 2.0), (-0.5, 0.5)], [False, False, False], "constant", (3, 3)),
])
def test_values_only_lookup_equals_the_lookup_with_derivatives(f, bounds, periodic, extrapolation, value_shape):
    """The sampler's values-only path (fewer operations) gives the values of the full lookup, inside the box,
    outside it (both continuations), across the periodic seam and for NaN coordinates."""
    table = GridInterpolant.from_function(f, bounds, periodic, 12, extrapolation=extrapolation,
                                          positive_definite=value_shape == (3, 3))
    box = [b if b is not None else (-PI, PI) for b in bounds]
    wide = [(lo - 0.7 * (hi - lo), hi + 0.7 * (hi - lo)) for lo, hi in box]  # a third of the points outside
    q = uniform_points(500, wide, seed=4)
    q[0, 0] = float("nan")
    full, _ = table.value_and_jacobian(q)
    values = table(q)  # not tracked by autograd: the values-only path
    assert bool(torch.isnan(values[0]).all()) and bool(torch.isnan(full[0]).all())
    torch.testing.assert_close(values[1:], full[1:], rtol=1e-12, atol=1e-12)
    # the row index in integers, as for a table too large for exact float indices (2^24 rows in float32)
    table._tables(q)["stride_f"] = None
    torch.testing.assert_close(table(q)[1:], values[1:], rtol=0, atol=0)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, message", [
    (dict(bounds=[(1.0, 0.0)], periodic=[False]), "give finite lo < hi"),
    (dict(bounds=[None], periodic=[False]), "coordinate 0 is bounded but has no"),
    (dict(bounds=[(0.0, math.inf)], periodic=[False]), "a table covers a finite box"),
    (dict(bounds=None, periodic=[True] * 4), "tabulate functions of 1, 2 or 3 coordinates"),
    (dict(bounds=[(0, 1), (0, 1)], periodic=[False]), "has 2 entries for 1 coordinates"),
    (dict(bounds=[(0.0, 1.0)], periodic=[False], n_points=3), "at least 4 grid points"),
    (dict(bounds=[(0.0, 1.0)], periodic=[False], method="linear"), "unknown method 'linear'"),
    (dict(bounds=[(0.0, 1.0)], periodic=[False], extrapolation="zero"), "unknown extrapolation 'zero'"),
    (dict(bounds=[(0.0, 1.0)], periodic=[False], chunk_size=0), "chunk_size"),
])
def test_bad_construction_is_a_clear_value_error(kwargs, message):
    kwargs = {"n_points": 8, **kwargs}
    with pytest.raises(ValueError, match=message):
        GridInterpolant.from_function(lambda q: q.sum(-1), **kwargs)


def test_bad_samples_inputs_and_files_are_clear_value_errors():
    with pytest.raises(ValueError, match="NaN or infinite"):
        GridInterpolant.from_samples(torch.tensor([0.0, 1.0, float("nan"), 2.0, 3.0]), [(0, 1)], [False])
    with pytest.raises(ValueError, match="returned shape"):
        GridInterpolant.from_function(lambda q: q.sum()[None], [(0, 1)], [False], 8)
    table = GridInterpolant.from_function(lambda q: q[:, 0] ** 2, [(0, 1)], [False], 8)
    with pytest.raises(ValueError, match=r"expected \(n_walkers, 1\)"):
        table(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="use value_and_jacobian"):
        GridInterpolant.from_function(spd_3x3, [(0, 1)] * 3, [False] * 3, 4).value_and_grad(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="not a stored grid interpolant"):
        GridInterpolant.from_dict({"kind": "kernel"})
    with pytest.raises(ValueError, match="format version 99"):
        GridInterpolant.from_dict({**table.to_dict(), "version": 99})


def test_kept_cells_give_the_table_near_the_points_they_were_found_at():
    """``value_and_cells`` keeps each walker's cell; A and dA/dQ at a nearby point evaluated on it are the table's to
    round-off (also just across a cell edge, where the cell's cubic is continued, and further out, where the walker's
    own cell is taken); other than a periodic B-spline refuses."""

    def spd_periodic(q):
        return spd_3x3(torch.sin(q))

    box = [(-math.pi, math.pi)] * 3
    table = GridInterpolant.from_function(spd_periodic, box, [True] * 3, 16, positive_definite=True)
    q = torch.rand(300, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 6.2 - 3.1
    q[:100] = torch.round(q[:100] / (2 * math.pi / 16)) * (2 * math.pi / 16) + 1e-9  # just past a grid line
    a, cells = table.value_and_cells(q)
    torch.testing.assert_close(a, table(q), rtol=1e-14, atol=1e-14)
    # moves of ~1e-6 of a cell (0.39 wide), half of the first 100 across a cell edge: there the continued cubic
    # differs from the table by |4th difference of the coefficients| s^3 / 6, its derivative by that s^2 / 2 / h
    q2 = q + 1e-7 * torch.randn(q.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (a_kept, da_kept), (a_fresh, da_fresh) = table.value_and_jacobian(q2, cells), table.value_and_jacobian(q2)
    torch.testing.assert_close(a_kept, a_fresh, rtol=1e-13, atol=1e-13 * float(a_fresh.abs().max()))
    # within the slack the channels' derivative error is at most DERIVATIVE_ERROR: in dA = dL L^T + L dL^T at most
    # 2 N max |A_ii| times it
    bound = 2 * 3 * TableCells.DERIVATIVE_ERROR * float(a_fresh.diagonal(dim1=1, dim2=2).max())
    torch.testing.assert_close(da_kept, da_fresh, rtol=1e-13, atol=bound + 1e-13 * float(da_fresh.abs().max()))
    # half a cell away most walkers have left their cells: those are evaluated on their own, so still the table
    torch.testing.assert_close(table.value_and_jacobian(q + 0.2, cells)[0], table(q + 0.2), rtol=1e-13, atol=1e-13)
    for other in (GridInterpolant.from_function(spd_periodic, box, [True] * 3, 8, positive_definite=True,
                                                method="catmull-rom"),
                  GridInterpolant.from_function(spd_3x3, [(-1, 1)] * 3, [False] * 3, 8, positive_definite=True)):
        assert not other.keeps_cells
        with pytest.raises(ValueError, match="plain lookups"):
            other.value_and_cells(q)
