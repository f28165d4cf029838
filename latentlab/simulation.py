"""Latent Langevin simulation with a trained potential: the effective mass A(Q) and the sampler.

:func:`mass_function` gives ``A(Q)`` as a batched torch function
``(n_walkers, n_cg) -> (n_walkers, n_cg, n_cg)``:

* **closed form** where the map has one (the seed's triangle map from the
  masses of its three atoms; a constant matrix for linear maps);
* otherwise a **kernel-smoothed binned mean** of ``A(q) = J M^-1 J^T`` over the
  data: frames are binned by Q, each occupied bin b keeps its mean ``A_b`` and
  its count ``n_b``, and

      A(Q) = sum_b w_b(Q) A_b,   w_b = softmax_b( ln n_b - 1/2 sum_d d_d(Q, c_b)^2 / h_d^2 )

  with ``d`` the (periodic, for dihedrals: ``2 sin(delta/2)``) distance to the
  bin centre ``c_b`` and bandwidth ``h`` one bin width.  A convex combination
  of positive-definite matrices is positive definite; the softmax never
  underflows (far from the data it picks the nearest bins); the whole thing
  is smooth in Q and made of torch ops that forward-mode AD handles (the
  sampler takes ``dA/dQ`` by forward-mode AD).  For an inconsistent map
  (phi/psi of alanine dipeptide) this is the best function of Q alone, and
  the map's consistency score (:func:`latentlab.consistency.check_consistency`)
  is reported with it.

Both kinds serialise to plain dictionaries (:meth:`to_dict`) stored in model
files, so a sampler can be built from a model file alone.

:func:`make_sampler` builds :class:`latentlab.dynamics.LatentLangevin` for a
trained :class:`latentlab.potentials.CGPotential` with walkers started from
data frames; :func:`save_simulation`/:func:`load_simulation` read and write
the ``latentlab simulate`` output.
"""

from __future__ import annotations

import copy
import json
import math
import os

import numpy as np
import torch

from latentlab.io import atomic_output
from latentlab.units import KB
from latentlab.validation import as_tensor, check_positive, fail

SIM_FORMAT = "latentlab-simulation"
SIM_FORMAT_VERSION = 1


# ---------------------------------------------------------------------------- mass models
class MassModel:
    """Base of the effective-mass models: callable ``Q (W, N) -> A (W, N, N)``."""

    kind = "base"
    consistency: dict | None = None

    def __call__(self, Q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_dict(self) -> dict:
        raise NotImplementedError

    def to(self, device=None, dtype=None) -> "MassModel":
        return self

    def describe(self) -> str:
        return self.kind


class TriangleMass(MassModel):
    """Closed-form A(Q) of the seed's (r1, r2, cos) map from the inverse masses of atoms a, b (vertex), c (1/amu)."""

    kind = "triangle"

    def __init__(self, inverse_masses):
        from latentlab.maps.internal import TriangleMap

        self.inverse_masses = as_tensor(inverse_masses, "inverse_masses", dtype=torch.float64).flatten()
        if self.inverse_masses.shape != (3,):
            fail("inverse_masses", f"has {self.inverse_masses.numel()} entries", "give 1/mass of atoms a, b, c")
        self._map = TriangleMap(0, 1, 2)
        self._cache = {}

    def __call__(self, Q):
        key = (Q.dtype, Q.device)
        if key not in self._cache:
            self._cache[key] = self.inverse_masses.to(dtype=Q.dtype, device=Q.device)
        return self._map.closed_form_effective_mass(Q, self._cache[key])

    def to_dict(self):
        return {"kind": self.kind, "inverse_masses": self.inverse_masses.clone(), "consistency": self.consistency}

    def describe(self):
        return "closed form (triangle map, physical masses)"


class ConstantMass(MassModel):
    """Constant A (linear maps with constant masses), ``(N, N)``."""

    kind = "constant"

    def __init__(self, matrix):
        self.matrix = as_tensor(matrix, "matrix", dtype=torch.float64)

    def __call__(self, Q):
        return self.matrix.to(dtype=Q.dtype, device=Q.device).expand(Q.shape[0], -1, -1)

    def to_dict(self):
        return {"kind": self.kind, "matrix": self.matrix.clone(), "consistency": self.consistency}

    def describe(self):
        return "closed form (constant, linear map)"


class KernelMass(MassModel):
    """Kernel-smoothed binned mean of A(q) (see the module docstring).

    Parameters
    ----------
    centres : array, shape=(n_bins, n_cg)
    values : array, shape=(n_bins, n_cg, n_cg)
        Mean A in each occupied bin.
    counts : array, shape=(n_bins,)
    bandwidth : array, shape=(n_cg,)
    periodic : sequence of bool
    """

    kind = "kernel"

    def __init__(self, centres, values, counts, bandwidth, periodic):
        self.centres = as_tensor(centres, "centres", dtype=torch.float64)
        self.values = as_tensor(values, "values", dtype=torch.float64)
        self.counts = as_tensor(counts, "counts", dtype=torch.float64)
        self.bandwidth = as_tensor(bandwidth, "bandwidth", dtype=torch.float64)
        self.periodic = [bool(p) for p in periodic]
        b, n = self.centres.shape
        if self.values.shape != (b, n, n) or self.counts.shape != (b,) or self.bandwidth.shape != (n,):
            fail("KernelMass", "centres, values, counts and bandwidth have inconsistent shapes",
                 "pass (B, N), (B, N, N), (B,), (N,)")
        self._cast = {}

    def to(self, device=None, dtype=None):
        return self

    def _tensors(self, Q):
        key = (Q.dtype, Q.device)
        if key not in self._cast:
            self._cast[key] = (self.centres.to(Q), self.values.to(Q), torch.log(self.counts).to(Q),
                               self.bandwidth.to(Q), torch.tensor(self.periodic, device=Q.device))
        return self._cast[key]

    def __call__(self, Q):
        c, v, logn, h, per = self._tensors(Q)
        return _KernelAverage.apply(Q, c, v, logn, h, per)

    def reference(self, Q):
        """The same A(Q) with plain torch ops (slow under forward-mode AD; used to test the analytic derivative)."""
        c, v, logn, h, per = self._tensors(Q)
        delta = Q[:, None, :] - c[None]  # (W, B, N)
        delta = torch.where(per, 2.0 * torch.sin(0.5 * delta), delta)
        w = torch.softmax(logn - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)  # (W, B)
        return torch.einsum("wb,bij->wij", w, v)

    def to_dict(self):
        return {"kind": self.kind, "centres": self.centres.clone(), "values": self.values.clone(),
                "counts": self.counts.clone(), "bandwidth": self.bandwidth.clone(), "periodic": list(self.periodic),
                "consistency": self.consistency}

    def describe(self):
        return f"kernel-smoothed binned mean of A(q) over {self.centres.shape[0]} bins"


class _KernelAverage(torch.autograd.Function):
    """``A(Q) = sum_b softmax_b(l_b(Q)) A_b`` with analytic forward- and reverse-mode derivatives.

    ``l_b = ln n_b - 1/2 sum_d (delta_bd / h_d)^2``, ``delta = Q - c`` (or ``2 sin((Q - c)/2)`` for periodic
    coordinates).  With ``dl_bd = -delta_bd / h_d^2 * d delta_bd / dQ_d`` and ``w = softmax(l)``:
    ``dw_b/dQ_d = w_b (dl_bd - sum_b' w_b' dl_b'd)`` and ``dA/dQ_d = sum_b dw_b/dQ_d A_b``.
    Generic forward-mode AD through the (walkers x bins x N) intermediates was ~8x slower.
    """

    @staticmethod
    def forward(ctx, Q, c, v, logn, h, per):
        diff = Q[:, None, :] - c[None]  # (W, B, N)
        delta = torch.where(per, 2.0 * torch.sin(0.5 * diff), diff)
        ddelta = torch.where(per, torch.cos(0.5 * diff), torch.ones_like(diff))
        w = torch.softmax(logn - 0.5 * ((delta / h) ** 2).sum(-1), dim=-1)  # (W, B)
        dl = -(delta / h**2) * ddelta  # (W, B, N)
        ctx.w, ctx.dl, ctx.v = w, dl, v
        return torch.einsum("wb,bij->wij", w, v)

    @staticmethod
    def _dw(w, dl, t):
        dlt = torch.einsum("wbd,wd->wb", dl, t)  # directional derivative of the logits
        return w * (dlt - (w * dlt).sum(-1, keepdim=True))

    @staticmethod
    def jvp(ctx, tQ, *_):
        return torch.einsum("wb,bij->wij", _KernelAverage._dw(ctx.w, ctx.dl, tQ), ctx.v)

    @staticmethod
    def backward(ctx, gA):
        w, dl = ctx.w, ctx.dl
        s = torch.einsum("wij,bij->wb", gA, ctx.v)  # (W, B)
        m = torch.einsum("wb,wbd->wd", w, dl)
        gQ = torch.einsum("wb,wbd->wd", s * w, dl) - (s * w).sum(-1, keepdim=True) * m
        return gQ, None, None, None, None, None


def mass_model_from_dict(d: dict) -> MassModel:
    """Rebuild a mass model from :meth:`MassModel.to_dict` output (as stored in model files)."""
    if not isinstance(d, dict) or "kind" not in d:
        fail("mass_model", "is not a stored effective-mass model", "re-train the model with this latentlab")
    kind = d["kind"]
    if kind == "triangle":
        m = TriangleMass(d["inverse_masses"])
    elif kind == "constant":
        m = ConstantMass(d["matrix"])
    elif kind == "kernel":
        m = KernelMass(d["centres"], d["values"], d["counts"], d["bandwidth"], d["periodic"])
    else:
        fail("mass_model", f"unknown kind {kind!r}", "use a model file written by this latentlab")
    m.consistency = d.get("consistency")
    return m


def default_bins(n_cg: int) -> int:
    """Bins per coordinate of the kernel mass table: 16 (N <= 2), 8 (N = 3), 4 (N > 3).

    A(q) varies slowly with Q; coarse bins keep the table (and every step of the sampler) cheap.
    """
    return 16 if n_cg <= 2 else (8 if n_cg == 3 else 4)


def _binned_mean_mass(Q: torch.Tensor, A: torch.Tensor, periodic, bins: int):
    n = Q.shape[1]
    lo, hi = Q.amin(0).clone(), Q.amax(0).clone()
    per = torch.tensor(periodic)
    lo[per], hi[per] = -math.pi, math.pi
    width = (hi - lo) / bins
    width = torch.where(width > 0, width, torch.ones_like(width))
    idx = torch.clamp(((Q - lo) / width).long(), 0, bins - 1)  # (F, N)
    flat = torch.zeros(Q.shape[0], dtype=torch.long)
    for d in range(n):
        flat = flat * bins + idx[:, d]
    keys, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(keys), n, n, dtype=A.dtype).index_add_(0, inverse, A)
    values = sums / counts[:, None, None]
    spread = torch.linalg.matrix_norm(A - values[inverse]) / torch.linalg.matrix_norm(values[inverse])
    centre_idx = torch.zeros(len(keys), n, dtype=torch.long)
    rest = keys.clone()
    for d in reversed(range(n)):
        centre_idx[:, d] = rest % bins
        rest = rest // bins
    centres = lo + (centre_idx.to(lo) + 0.5) * width
    return centres, values, counts.to(torch.float64), width, spread


def mass_function(cg_map, dataset=None, *, positions=None, masses=None, bins: int | None = None,
                  max_frames: int = 20000, consistency: bool = True, kind: str = "auto") -> MassModel:
    """The effective mass A(Q) for latent dynamics with ``cg_map``.

    Parameters
    ----------
    cg_map : CGMap
    dataset : Dataset, optional
        Source of positions and (physical) masses; needed unless the map has a closed form
        and ``masses`` is given.
    positions : array, shape=(n_frames, n_atoms, 3), nm, optional
        Instead of ``dataset.positions``.
    masses : array, shape=(n_atoms,), amu, optional
        Instead of ``dataset.masses``.
    bins : int, optional
        Bins per coordinate of the kernel table (default :func:`default_bins`).
    max_frames : int
        Frames (evenly strided) used for the kernel table.
    consistency : bool
        Compute the map's level-set consistency score (:func:`latentlab.consistency.check_consistency`,
        on up to 200 frames) and store it as ``.consistency``.
    kind : {"auto", "closed-form", "kernel"}

    Returns
    -------
    MassModel
        Callable ``(n_walkers, n_cg) -> (n_walkers, n_cg, n_cg)`` with ``.kind``, ``.consistency``, ``.to_dict()``.
    """
    from latentlab.maps.internal import TriangleMap
    from latentlab.maps.mass import effective_mass

    if kind not in ("auto", "closed-form", "kernel"):
        fail("kind", f"got {kind!r}", "use 'auto', 'closed-form' or 'kernel'")
    if masses is None:
        if dataset is None:
            fail("masses", "neither masses nor a data set was given", "pass dataset= or masses= (amu)")
        masses = dataset.masses
    m = as_tensor(masses, "masses", dtype=torch.float64)
    if positions is None and dataset is not None:
        positions = dataset.positions
    model: MassModel | None = None
    if kind in ("auto", "closed-form"):
        inv = 1.0 / m[list(cg_map.atoms)]
        if isinstance(cg_map, TriangleMap):
            model = TriangleMass(inv)
        elif cg_map.is_linear:
            a = cg_map.closed_form_effective_mass(torch.zeros(1, cg_map.n_cg, dtype=torch.float64), inv)
            if a is not None:
                model = ConstantMass(a[0])
        if model is None and kind == "closed-form":
            fail("kind", f"the map {cg_map.spec or cg_map!r} has no closed-form effective mass", "use kind='kernel'")
    x = None
    if positions is not None:
        x = as_tensor(positions, "positions", dtype=torch.float64)
        stride = max(1, x.shape[0] // int(max_frames))
        x = x[::stride]
    if model is None:
        if x is None:
            fail("positions", f"the map {cg_map.spec or cg_map!r} has no closed-form A(Q)",
                 "pass a data set (or positions) so A(Q) can be estimated from data")
        Q = cg_map(x).detach()
        a = effective_mass(cg_map, x, m).detach()
        centres, values, counts, width, spread = _binned_mean_mass(Q, a, cg_map.periodic, int(bins or default_bins(cg_map.n_cg)))
        model = KernelMass(centres, values, counts, width, cg_map.periodic)
        model.consistency = {"binned_spread_mean": float(spread.mean()), "binned_spread_p95": float(torch.quantile(spread, 0.95))}
    if consistency and x is not None:
        from latentlab.consistency import check_consistency

        sub = x[:: max(1, x.shape[0] // 200)][:200]
        report = check_consistency(cg_map, sub, m, n_level_set_frames=min(100, sub.shape[0]))
        model.consistency = {**(model.consistency or {}), "score": report.score, "verdict": report.verdict(),
                             "binned_median": report.binned.get("median")}
    return model


# ---------------------------------------------------------------------------- sampler
def _model_mass(model, dataset, cg_map=None) -> MassModel:
    stored = (getattr(model, "metadata", None) or {}).get("mass_model")
    if stored is not None:
        return mass_model_from_dict(stored)
    if dataset is None:
        fail("model", "has no stored effective-mass model and no data set was given", "pass dataset=")
    spec = (getattr(model, "metadata", None) or {}).get("map")
    return mass_function(cg_map or dataset.map(spec), dataset, consistency=False)


def start_points(model, dataset=None, n_walkers: int = 1, start="data", seed: int | None = None,
                 cg_map=None) -> torch.Tensor:
    """Starting Q ``(n_walkers, n_cg)``: random data frames (``"data"``) or a given array."""
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    if isinstance(start, str):
        if start != "data":
            fail("start", f"got {start!r}", "use 'data' or an array of starting points (n_walkers, n_cg)")
        if dataset is not None:
            cmap = cg_map or dataset.map((model.metadata or {}).get("map"))
            idx = torch.randint(0, dataset.n_frames, (n_walkers,), generator=gen)
            pos = torch.as_tensor(dataset.positions[idx.numpy()], dtype=torch.float64)
            return cmap(pos).detach()
        stored = (getattr(model, "metadata", None) or {}).get("start_Q")
        if stored is None:
            fail("dataset", "the model stores no starting points and no data set was given", "pass dataset=")
        stored = torch.as_tensor(stored, dtype=torch.float64)
        idx = torch.randint(0, stored.shape[0], (n_walkers,), generator=gen)
        return stored[idx]
    q = as_tensor(start, "start", dtype=torch.float64)
    if q.dim() == 1:
        q = q[None].expand(n_walkers, -1)
    if q.shape != (n_walkers, model.n_cg):
        fail("start", f"has shape {tuple(q.shape)}", f"pass (n_walkers, n_cg) = ({n_walkers}, {model.n_cg})")
    return q


#: Friction rate (1/ps) that ``gamma="auto"`` aims at: gamma times the geometric mean eigenvalue of A.
AUTO_FRICTION_RATE = 10.0


def auto_gamma(mass, Q: torch.Tensor, rate: float = AUTO_FRICTION_RATE) -> float:
    """Friction ``gamma`` (amu/ps) giving the friction rate ``rate`` (1/ps) at the typical A of the points ``Q``.

    The friction rates of latent Langevin are ``gamma`` times the eigenvalues of A
    (``dP = -gamma A P dt + ...``), and A's scale differs by orders of magnitude
    between maps (~0.3 nm^2/amu for CA triangles, ~30 rad^2/amu for backbone
    dihedrals), so one fixed gamma is either overdamped (slow barrier crossing) or
    underdamped somewhere.  ``rate = 10/ps`` is near critical damping for
    typical latent vibrations (periods ~ 0.2-1 ps).
    """
    w = torch.linalg.eigvalsh(mass(Q.to(torch.float64)))
    return float(rate / torch.exp(torch.log(w.clamp_min(1e-300)).mean()))


def make_sampler(model, *, dataset=None, n_walkers: int = 256, dt: float = 0.002, gamma: float | str = "auto",
                 temperature: float | None = None, device="cpu", seed: int | None = None, start="data",
                 mass=None, metropolis: bool = False, dtype=torch.float64, cg_map=None):
    """Latent Langevin sampler for a trained potential, with walkers started from data.

    Parameters
    ----------
    model : CGPotential
        Trained ``V(Q)`` (with ``.metadata`` from training: map, periodic, bounds, mass model, start points).
    dataset : Dataset, optional
        For starting points and A(Q) when the model file does not carry them.
    n_walkers : int
    dt : float, ps
    gamma : float (amu/ps) or "auto"
        ``"auto"``: :func:`auto_gamma` at the starting points (friction rate ~10/ps).
    temperature : float, K, optional
        Default: the model's training temperature.  A temperature-conditioned
        model uses ``V(Q, T)``; any other model keeps its V (the potential at its training temperature).
    device : str
    seed : int, optional
    start : "data" or array, shape=(n_walkers, n_cg)
    mass : callable, optional
        ``A(Q)``; default: the model's stored mass model (closed form or kernel table).
    metropolis : bool
        GHMC steps (exact for any dt).

    Returns
    -------
    (LatentLangevin, LangevinState)
    """
    from latentlab.dynamics import LatentLangevin

    if int(n_walkers) < 1:
        fail("n_walkers", f"got {n_walkers}", "use at least 1 walker")
    meta = getattr(model, "metadata", None) or {}
    temperature = float(temperature if temperature is not None else meta.get("temperature", model.temperature))
    check_positive(temperature, "temperature", "K")
    device = torch.device(device)
    mass = mass if mass is not None else _model_mass(model, dataset, cg_map)
    pot = copy.deepcopy(model).to(device=device, dtype=dtype)
    pot.requires_grad_(False)
    pot.eval()
    if pot.temperature_conditioning:
        potential = pot.at_temperature(temperature)
    else:
        potential = pot
    n = model.n_cg
    bounds = meta.get("bounds") or [None] * n
    bounds = [None if b is None else (float(b[0]), float(b[1])) for b in bounds]
    periodic = meta.get("periodic") or list(model.periodic)
    q0 = start_points(model, dataset, int(n_walkers), start, seed, cg_map)
    if isinstance(gamma, str):
        if gamma != "auto":
            fail("gamma", f"got {gamma!r}", "give a friction in amu/ps or 'auto'")
        gamma = auto_gamma(mass, q0)
    sampler = LatentLangevin(potential, mass, KB * temperature, dt, gamma, periodic=periodic, bounds=bounds,
                             metropolis=metropolis, device=device, dtype=dtype, seed=seed)
    # Keep starts strictly inside reflecting bounds (a cos of exactly +-1 is singular).
    for i, b in enumerate(bounds):
        if b is not None and not periodic[i]:
            lo, hi = b
            eps = 1e-6 * (1.0 + max(abs(lo) if math.isfinite(lo) else 0.0, abs(hi) if math.isfinite(hi) else 0.0))
            q0[:, i] = q0[:, i].clamp(lo + eps if math.isfinite(lo) else -math.inf, hi - eps if math.isfinite(hi) else math.inf)
    state = sampler.init(q0.to(device=device, dtype=dtype))
    return sampler, state


# ---------------------------------------------------------------------------- SIM files
def save_simulation(path: str, Q, time, metadata: dict, **arrays) -> str:
    """Write a simulation file atomically (``.npz``: ``Q (n_records, n_walkers, n_cg)``, ``time`` ps, JSON metadata)."""
    meta = dict(metadata)
    meta.setdefault("format", SIM_FORMAT)
    meta.setdefault("format_version", SIM_FORMAT_VERSION)
    payload = {"Q": np.asarray(Q, dtype=np.float32), "time": np.asarray(time, dtype=np.float64),
               "metadata": np.array(json.dumps(meta, default=_json_default))}
    payload.update({k: np.asarray(v) for k, v in arrays.items()})
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    return os.fspath(path)


def _json_default(obj):
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


def load_simulation(path: str) -> dict:
    """Read a simulation file: dict with ``Q (n_records, n_walkers, n_cg)``, ``time``, ``metadata`` and extra arrays."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"simulation: {path} does not exist. Fix: pass the file written by 'latentlab simulate --out'")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        meta = json.loads(str(out.pop("metadata")))
    except Exception as err:
        fail("simulation", f"{path} is not a readable latentlab simulation file ({type(err).__name__})",
             "pass a file written by 'latentlab simulate'")
    if meta.get("format") != SIM_FORMAT:
        fail("simulation", f"{path} is not a latentlab simulation file (format {meta.get('format')!r})",
             "pass a file written by 'latentlab simulate'")
    out["metadata"] = meta
    return out


def simulate_model(model, out: str | None, *, n_walkers: int, n_steps: int, dt: float = 0.002, gamma="auto",
                   temperature: float | None = None, device="cpu", seed: int | None = 0, record_every: int = 10,
                   dataset=None, metropolis: bool = False, progress: bool = False, model_path: str | None = None,
                   callback=None) -> dict:
    """Run latent Langevin with a trained model and write a SIM file (also on Ctrl-C, with what was done).

    Parameters are those of :func:`make_sampler` plus ``n_steps``, ``record_every`` and
    ``callback(state) -> bool`` (called after each record; True stops the run).

    Returns
    -------
    dict
        Summary: ``steps_done``, ``simulated_ps``, ``seconds``, ``interrupted``, ``diagnostics``, ``out``,
        and (not in the file's JSON) ``Q`` ``(n_records, n_walkers, n_cg)`` as a NumPy array.
    """
    import time

    if int(n_steps) < 1 or int(record_every) < 1:
        fail("n_steps", f"got n_steps={n_steps}, record_every={record_every}", "use positive integers")
    t0 = time.perf_counter()
    sampler, state = make_sampler(model, dataset=dataset, n_walkers=n_walkers, dt=dt, gamma=gamma,
                                  temperature=temperature, device=device, seed=seed, metropolis=metropolis)
    n_records = int(n_steps) // int(record_every)
    qs, times, kin = [], [], []
    interrupted = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_records * int(record_every), unit="step", desc="latent Langevin")
    try:
        for _ in range(n_records):
            sampler.step(state, int(record_every))
            qs.append(state.Q.detach().cpu().numpy().astype(np.float32))
            times.append(state.step * sampler.dt)
            kin.append(float((2.0 * state.kinetic_energy()).mean()))
            if bar is not None:
                bar.update(int(record_every))
            if callback is not None and callback(state):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if bar is not None:
            bar.close()
    n_cg = model.n_cg
    Q = np.stack(qs) if qs else np.zeros((0, int(n_walkers), n_cg), dtype=np.float32)
    diag = sampler.diagnostics(state)
    if kin:
        diag["kinetic_temperature_ratio"] = float(np.mean(kin)) / (n_cg * sampler.kT)
    meta = getattr(model, "metadata", None) or {}
    mass = meta.get("mass_model") or {}
    summary = {
        "model": model_path, "map": meta.get("map"), "names": meta.get("names", list(model.names)),
        "units": meta.get("units", list(model.units)), "periodic": meta.get("periodic", list(model.periodic)),
        "bounds": meta.get("bounds"), "convention": meta.get("convention"), "dataset": meta.get("dataset"),
        "temperature": float(sampler.kT / KB), "model_temperature": meta.get("temperature"), "dt": float(dt),
        "gamma": float(sampler.gamma), "gamma_requested": gamma, "walkers": int(n_walkers), "steps_requested": int(n_steps),
        "steps_done": int(state.step), "record_every": int(record_every), "simulated_ps": float(state.step * sampler.dt),
        "metropolis": bool(metropolis), "device": str(device), "seed": seed,
        "mass_model": {"kind": mass.get("kind"), "consistency": mass.get("consistency")},
        "diagnostics": diag, "interrupted": interrupted, "seconds": time.perf_counter() - t0, "out": out,
    }
    if out is not None:
        save_simulation(out, Q, np.asarray(times), summary)
    return {**summary, "Q": Q}

