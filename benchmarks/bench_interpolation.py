"""Grid interpolants vs the functions they replace: speed side by side, and accuracy on the real data.

Prints tables and writes JSON (default ``benchmarks/results/bench_interpolation.json``).  Usage::

    python benchmarks/bench_interpolation.py [--device cpu|cuda] [--quick] [--out FILE]

Speed, at 1024 and 16384 walkers, float64 and float32, timed in interleaved loops (each repetition
runs every candidate once; medians; the tables and the direct functions in two groups, each with
its own MLP timing), ratios to a bare MLP with three hidden layers of 128 (SiLU, 3 inputs)
forward + gradient at the same walker count and dtype:

* ``support-2d`` / ``support-3d``: the data-support prior of a ``CGPotential.from_data(..., support=True)``
  of alanine dipeptide (phi, psi) and chignolin (triangle map) and its gradient by autograd, as the
  sampler evaluates it today; ``table-2d`` / ``table-3d``: the same prior from a table of the log
  kernel density (``value_and_grad``, then ``1/2 k (l* - l)^2`` and its gradient);
  ``table-autograd-*``: the same through the table's ``__call__`` and ``torch.autograd.grad``;
* ``kernel-mass-2d`` / ``-3d``: ``KernelMass`` A(Q) of the same data with dA/dQ by forward-mode AD
  over stacked unit tangents (the sampler's ``mass_derivative``); ``mass-table-2d`` / ``-3d``: a
  Cholesky (SPD) table of that A, ``value_and_jacobian``;
* ``kernel-mass-value`` / ``mass-table-value``: A alone (what the implicit position step calls).

Accuracy: each table against its function on the data frames and on uniform points of the table's
box, for a sweep of grid sizes (with build time and table memory); and the interpolating B-spline
against Catmull-Rom on an analytic function (same cost per evaluation, measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import torch
from _common import mlp

from latentlab.interpolation import DEFAULT_POINTS, GridInterpolant

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---------------------------------------------------------------------------- timing
def interleaved_medians(candidates: dict, min_time: float, min_reps: int = 5, sync=None) -> dict:
    """Median seconds per call of each candidate, all timed in the same loop (robust to load drifts)."""
    for fn in candidates.values():
        fn()
    times = {name: [] for name in candidates}
    start = time.perf_counter()
    while min(len(t) for t in times.values()) < min_reps or time.perf_counter() - start < min_time:
        for name, fn in candidates.items():
            t = time.perf_counter()
            fn()
            if sync:
                sync()
            times[name].append(time.perf_counter() - t)
        if len(times[next(iter(times))]) >= 200:
            break
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def value_and_autograd(fn, q):
    with torch.enable_grad():
        x = q.detach().requires_grad_(True)
        v = fn(x)
        (g,) = torch.autograd.grad(v.sum(), x)
    return v.detach(), g


def forward_ad_jacobian(fn, q):
    """``fn(q) (W, N, N)`` and its derivative ``(W, N, N, D)`` by forward AD over D stacked unit tangents."""
    import torch.autograd.forward_ad as fwAD

    w, n = q.shape
    tangent = torch.eye(n, dtype=q.dtype, device=q.device).repeat_interleave(w, 0)
    with fwAD.dual_level():
        primal, tan = fwAD.unpack_dual(fn(fwAD.make_dual(q.repeat(n, 1), tangent)))
    return primal[:w], tan.reshape((n, w) + tuple(primal.shape[1:])).movedim(0, -1)


# ---------------------------------------------------------------------------- the real functions
class SupportAdapter:
    """The support prior of a trained-model potential, read through the current or the 0.1.0 API."""

    def __init__(self, potential):
        sup = getattr(potential, "support", None)
        if isinstance(sup, torch.nn.Module):  # potentials/priors.py SupportPrior
            self.prior, self.log_density = sup, sup.log_density
            self.level, self.k = float(sup.level), float(sup.k)
        else:  # CGPotential.support_prior / log_support (0.1.0)
            self.prior, self.log_density = potential.support_prior, potential.log_support
            self.level, self.k = float(potential.support_level), float(potential.support_k)

    def from_log_density(self, l, dl):
        """Prior ``1/2 k (l* - l)^2`` (where l < l*) and its gradient from ``l (W,)`` and ``grad l (W, D)``."""
        gap = torch.clamp(self.level - l, min=0.0)
        return 0.5 * self.k * gap**2, -(self.k * gap)[:, None] * dl


def kernel_mass(cg_map, dataset):
    try:
        from latentlab.maps.mass_model import build_mass_model

        return build_mass_model(cg_map, dataset.positions, dataset.masses, kind="kernel", consistency=False)
    except ImportError:  # 0.1.0 layout
        from latentlab.simulation import mass_function

        return mass_function(cg_map, dataset, kind="kernel", consistency=False)


def table_box(Q, periodic, pad_fraction: float = 1 / 8):
    """The data range of each bounded coordinate padded by ``pad_fraction`` of it (one 3-D kernel width); None if periodic."""
    lo, hi = Q.amin(0), Q.amax(0)
    pad = pad_fraction * (hi - lo)
    return [None if p else (float(a - e), float(b + e)) for p, a, b, e in zip(periodic, lo, hi, pad)]


def load_system(name: str):
    from latentlab.data import load
    from latentlab.potentials import CGPotential

    ds = load(name)
    cg_map = ds.map()
    Q = cg_map.map_frames(ds.positions)
    periodic = list(cg_map.periodic)
    potential = CGPotential.from_data(Q, periodic=periodic, temperature=ds.temperature, support=True)
    return {"name": name, "Q": Q, "periodic": periodic, "support": SupportAdapter(potential),
            "mass": kernel_mass(cg_map, ds), "box": table_box(Q, periodic), "kT": potential.kT}


def build_tables(system, n_points=None):
    t0 = time.perf_counter()
    log_density = GridInterpolant.from_function(system["support"].log_density, system["box"], system["periodic"], n_points)
    t1 = time.perf_counter()
    mass = GridInterpolant.from_function(system["mass"], system["box"], system["periodic"], n_points,
                                         positive_definite=True, extrapolation="constant")
    t2 = time.perf_counter()
    return log_density, mass, {"build_s_log_density": t1 - t0, "build_s_mass": t2 - t1}


# ---------------------------------------------------------------------------- accuracy
def box_points(system, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, len(system["periodic"]), generator=g, dtype=torch.float64)
    lo = torch.tensor([-math.pi if b is None else b[0] for b in system["box"]], dtype=torch.float64)
    hi = torch.tensor([math.pi if b is None else b[1] for b in system["box"]], dtype=torch.float64)
    return lo + (hi - lo) * u


def accuracy(system, log_density, mass, n_points: int = 4000) -> dict:
    sup = system["support"]
    frames = system["Q"][:: max(1, system["Q"].shape[0] // n_points)]
    out = {}
    for where, q in [("data", frames), ("box", box_points(system, n_points))]:
        prior, gprior = value_and_autograd(sup.prior, q)
        l, dl = log_density.value_and_grad(q)
        tprior, tgprior = sup.from_log_density(l, dl)
        a, da = forward_ad_jacobian(system["mass"], q)
        ta, tda = mass.value_and_jacobian(q)
        kT = system["kT"]
        out[where] = {
            "log_density_max_abs_err": float((l - sup.log_density(q)).abs().max()),
            "prior_max_abs_err_kT": float((tprior - prior).abs().max()) / kT,
            "prior_grad_max_abs_err_kT_per_unit": float((tgprior - gprior).abs().max()) / kT,
            "prior_grad_max_kT_per_unit": float(gprior.abs().max()) / kT,
            "mass_max_rel_err": float((torch.linalg.matrix_norm(ta - a) / torch.linalg.matrix_norm(a)).max()),
            "mass_derivative_max_err_rel_to_max": float((tda - da).abs().max() / da.abs().max()),
            "mass_min_eigenvalue_ratio": float((torch.linalg.eigvalsh(ta)[:, 0] / torch.linalg.eigvalsh(a)[:, 0]).min()),
        }
    return out


def analytic_method_comparison(sizes=(64, 128, 256)) -> list[dict]:
    """B-spline vs Catmull-Rom on a smooth periodic 2-D function: max errors over 20k random points."""

    def f(q):
        return torch.sin(q[:, 0]) * torch.cos(2 * q[:, 1]) + 0.3 * torch.sin(q[:, 0] + q[:, 1])

    g = torch.Generator().manual_seed(0)
    q = (2 * torch.rand(20000, 2, generator=g, dtype=torch.float64) - 1) * math.pi
    exact, exact_g = value_and_autograd(f, q)
    rows = []
    for n in sizes:
        row = {"n_points": n}
        for method in ("bspline", "catmull-rom"):
            t = GridInterpolant.from_function(f, None, [True, True], n, method=method)
            v, gr = t.value_and_grad(q)
            row[method] = {"value_max_err": float((v - exact).abs().max()), "grad_max_err": float((gr - exact_g).abs().max())}
        rows.append(row)
    return rows


def gaussian_resolution(points_per_sigma=(3, 5, 10)) -> list[dict]:
    """Largest error of the B-spline table of exp(-x^2/2) on [-6, 6] (and of its gradient), relative to their peaks."""

    def f(q):
        return torch.exp(-0.5 * q[:, 0] ** 2)

    x = torch.linspace(-6.0, 6.0, 20001, dtype=torch.float64)[:, None]
    rows = []
    for ppw in points_per_sigma:
        v, g = GridInterpolant.from_function(f, [(-6.0, 6.0)], [False], 12 * ppw + 1).value_and_grad(x)
        rows.append({"points_per_sigma": ppw, "value_err_rel_peak": float((v - f(x)).abs().max()),
                     "grad_err_rel_peak": float((g[:, 0] + x[:, 0] * f(x)).abs().max()) / math.exp(-0.5)})
    return rows


# ---------------------------------------------------------------------------- speed
def speed(systems, tables, device, dtype, walkers: int, min_time: float, sync) -> dict:
    """Median ms and ratio to the MLP of every candidate.

    Two interleaved groups, each with its own MLP timing: the tables (fast, many repetitions) and the
    direct kernel functions they replace (slow, fewer); ratios are taken within a group."""
    torch.manual_seed(0)
    net = mlp(3).to(device=device, dtype=dtype)
    tabled, direct = {}, {}
    q3 = None
    for key, system in systems.items():
        d = "2d" if len(system["periodic"]) == 2 else "3d"
        frames = system["Q"][torch.randint(0, system["Q"].shape[0], (walkers,), generator=torch.Generator().manual_seed(1))]
        q = frames.to(device=device, dtype=dtype)  # walkers where the data are, as in a simulation
        q3 = q if d == "3d" else q3
        sup, mass = system["support"], system["mass"]
        prior = sup.prior.to(device) if isinstance(sup.prior, torch.nn.Module) else sup.prior
        log_table, mass_table = (t.to(device) for t in tables[key])
        direct[f"support-{d}"] = (lambda q=q, prior=prior: value_and_autograd(prior, q))
        tabled[f"table-{d}"] = (lambda q=q, t=log_table, s=sup: s.from_log_density(*t.value_and_grad(q)))
        tabled[f"table-autograd-{d}"] = (lambda q=q, t=log_table, s=sup: value_and_autograd(
            lambda x: 0.5 * s.k * torch.clamp(s.level - t(x), min=0.0) ** 2, q))
        direct[f"kernel-mass-{d}"] = (lambda q=q, m=mass: forward_ad_jacobian(m, q))
        tabled[f"mass-table-{d}"] = (lambda q=q, t=mass_table: t.value_and_jacobian(q))
        direct[f"kernel-mass-value-{d}"] = (lambda q=q, m=mass: m(q))
        tabled[f"mass-table-value-{d}"] = (lambda q=q, t=mass_table: t(q))
    out = {}
    for group, cands, seconds in (("tables", tabled, min_time), ("direct", direct, min_time / 3)):
        cands["mlp"] = lambda: value_and_autograd(lambda x: net(x)[:, 0], q3)
        medians = interleaved_medians(cands, seconds, sync=sync)
        for name, t in medians.items():
            out[name if name != "mlp" else f"mlp ({group} group)"] = {"ms": 1e3 * t, "ratio_to_mlp": t / medians["mlp"]}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a shorter grid sweep")
    parser.add_argument("--out", default=os.path.join(RESULTS, "bench_interpolation.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else None
    min_time = 1.0 if args.quick else 3.0

    systems = {name: load_system(name) for name in ("alanine-dipeptide", "chignolin")}
    result = {"device": args.device, "torch": torch.__version__, "platform": platform.platform(),
              "threads": torch.get_num_threads(), "default_points": DEFAULT_POINTS, "systems": {}, "speed": [],
              "methods": analytic_method_comparison(), "gaussian": gaussian_resolution()}

    print("accuracy of the tables (support prior via the log density; A as a Cholesky table)")
    print(f"{'system':18s} {'n':>4s} {'MB':>6s} {'build s':>8s} {'where':>5s} {'prior kT':>9s} {'grad kT/u':>9s} "
          f"{'|grad| kT/u':>11s} {'A rel':>8s} {'dA rel':>8s}")
    tables = {}
    for key, system in systems.items():
        d = len(system["periodic"])
        sweep = {2: [128, 256, 512], 3: [32, 48, 64]}[d]
        if args.quick:
            sweep = [DEFAULT_POINTS[d] // 2, DEFAULT_POINTS[d]]
        rows = []
        for n in sweep:
            log_table, mass_table, build = build_tables(system, n)
            mb = sum(t.coefficients.numel() * 8 for t in (log_table, mass_table)) / 2**20
            acc = accuracy(system, log_table, mass_table)
            rows.append({"n_points": n, "table_MB_float64": mb, **build, **acc})
            for where in ("data", "box"):
                a = acc[where]
                print(f"{key:18s} {n:4d} {mb:6.1f} {build['build_s_log_density'] + build['build_s_mass']:8.2f} {where:>5s} "
                      f"{a['prior_max_abs_err_kT']:9.2e} {a['prior_grad_max_abs_err_kT_per_unit']:9.2e} "
                      f"{a['prior_grad_max_kT_per_unit']:11.2e} {a['mass_max_rel_err']:8.1e} "
                      f"{a['mass_derivative_max_err_rel_to_max']:8.1e}")
            if n == DEFAULT_POINTS[d]:
                tables[key] = (log_table, mass_table)
        result["systems"][key] = {"n_frames": int(system["Q"].shape[0]), "periodic": system["periodic"],
                                  "box": system["box"], "kernel_mass_bins": int(system["mass"].centres.shape[0]),
                                  "sweep": rows}

    print("\nB-spline vs Catmull-Rom, sin(x) cos(2y) + 0.3 sin(x + y) on a periodic 2-D grid (max errors)")
    for row in result["methods"]:
        b, c = row["bspline"], row["catmull-rom"]
        print(f"  n={row['n_points']:4d}  bspline {b['value_max_err']:.1e} / grad {b['grad_max_err']:.1e}   "
              f"catmull-rom {c['value_max_err']:.1e} / grad {c['grad_max_err']:.1e}")

    print("B-spline table of a Gaussian, largest errors relative to the peak value / peak gradient")
    for row in result["gaussian"]:
        print(f"  {row['points_per_sigma']:3d} points per sigma: {row['value_err_rel_peak']:.1e} / {row['grad_err_rel_peak']:.1e}")

    print(f"\nspeed ({args.device}, {torch.get_num_threads()} thread(s)), median ms per call, ratio to the MLP's forward + gradient")
    for dtype in (torch.float64, torch.float32):
        for walkers in (1024, 16384):
            r = speed(systems, tables, args.device, dtype, walkers, min_time, sync)
            result["speed"].append({"dtype": str(dtype).replace("torch.", ""), "walkers": walkers, "timings": r})
            print(f"  {str(dtype).replace('torch.', '')}, {walkers} walkers")
            for name in sorted(r, key=lambda k: (not k.startswith("mlp"), k)):
                print(f"    {name:22s} {r[name]['ms']:9.3f} ms   x{r[name]['ratio_to_mlp']:6.2f}")

    from latentlab.io import atomic_output

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with atomic_output(args.out) as tmp, open(tmp, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
