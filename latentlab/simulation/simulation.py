"""The :class:`Simulation` facade: a CG model, an integrator, walkers and reporters.

In the manner of OpenMM's ``Simulation``: build it from a :class:`latentlab.model.CGModel` and the
run settings, attach reporters (:mod:`latentlab.simulation.reporters`), call :meth:`Simulation.run`.
This is the one loop that advances and records latent dynamics: the ``simulate`` command, the
dashboard, the notebooks, the demo and relative-entropy training all use it::

    sim = Simulation(model, n_walkers=1024, dt=0.002, gamma="auto", seed=0)
    sim.reporters.append(SimFileReporter("out.npz", every=10))
    sim.reporters.append(ProgressReporter(every=10, total=5000))
    summary = sim.run(5000)
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from operator import attrgetter

import numpy as np
import torch

from latentlab.dynamics import INTEGRATORS, check_dynamics, check_friction_model
from latentlab.dynamics.langevin import LangevinState, LatentLangevin
from latentlab.units import FRICTION_UNITS, KB
from latentlab.validation import as_tensor, check_positive, fail

#: Friction rate (1/ps) that ``gamma="auto"`` aims at: gamma times the geometric mean eigenvalue of A.
AUTO_FRICTION_RATE = 10.0

#: ``Simulation.problems`` thresholds: fraction of walker-steps re-seeded, relative kinetic-temperature error.
MAX_RESEEDED_FRACTION = 0.01
MAX_TEMPERATURE_ERROR = 0.05


def auto_gamma(mass, Q: torch.Tensor, rate: float = AUTO_FRICTION_RATE, friction_model: str = "coordinate") -> float:
    """Friction ``gamma`` giving the friction rate ``rate`` (1/ps) at the typical A of the points ``Q``.

    Atomic friction: ``gamma`` is the rate itself (1/ps; every direction relaxes at it).  Coordinate friction
    (amu/ps): the friction rates are ``gamma`` times the eigenvalues of A (``dP = -gamma A P dt + ...``),
    so gamma is ``rate`` over the geometric mean eigenvalue of A at ``Q``.  A's scale differs by orders of magnitude between maps
    (~0.3 nm^2/amu for CA triangles, ~30 rad^2/amu for backbone dihedrals), so one fixed gamma is either
    overdamped or underdamped somewhere.  ``rate = 10/ps`` is near critical damping for typical latent
    vibrations (periods ~ 0.2-1 ps).
    """
    if check_friction_model(friction_model) == "atomic":
        return float(rate)
    w = torch.linalg.eigvalsh(mass(Q.to(torch.float64)))
    return float(rate / torch.exp(torch.log(w.clamp_min(1e-300)).mean()))


def start_points(model, n_walkers: int, start="data", seed: int | None = 0) -> torch.Tensor:
    """Starting Q ``(n_walkers, n_cg)``: random stored data points (``"data"``) or a given array (one point or one per walker)."""
    gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
    if isinstance(start, str):
        if start != "data":
            fail("start", f"got {start!r}", "use 'data' or an array of starting points (n_walkers, n_cg)")
        if model.start_points is None or model.start_points.shape[0] == 0:
            fail("start", "the model stores no starting points", "pass start= an array of latent states (n_walkers, n_cg)")
        idx = torch.randint(0, model.start_points.shape[0], (int(n_walkers),), generator=gen)
        return model.start_points[idx].clone()
    q = as_tensor(start, "start", dtype=torch.float64)
    if q.dim() == 1:
        q = q[None].expand(int(n_walkers), -1).clone()
    if q.shape != (int(n_walkers), model.n_cg):
        fail("start", f"has shape {tuple(q.shape)}", f"pass (n_walkers, n_cg) = ({n_walkers}, {model.n_cg})")
    return q


def _inside_bounds(q: torch.Tensor, bounds, periodic) -> torch.Tensor:
    """Move starting points strictly inside reflecting bounds (a cosine of exactly +-1 is singular)."""
    q = q.clone()
    for i, b in enumerate(bounds):
        if b is None or periodic[i]:
            continue
        lo, hi = float(b[0]), float(b[1])
        eps = 1e-6 * (1.0 + max(abs(lo) if math.isfinite(lo) else 0.0, abs(hi) if math.isfinite(hi) else 0.0))
        q[:, i] = q[:, i].clamp(lo + eps if math.isfinite(lo) else -math.inf, hi - eps if math.isfinite(hi) else math.inf)
    return q


class Simulation:
    """Latent Langevin dynamics of a CG model (see the module docstring).

    Parameters
    ----------
    model : latentlab.model.CGModel
    n_walkers : int
        Independent walkers, advanced together as one batch.
    dt : float, ps
    gamma : float (amu/ps, or 1/ps for atomic friction), "auto" or None
        Friction.  ``None``: the model's calibrated friction when it has one (for the model's own friction
        model), else "auto";
        ``"auto"``: a friction rate of ~10/ps (:func:`auto_gamma` at the starting points for coordinate
        friction, 10/ps itself for atomic friction).
    dynamics : {"langevin", "brownian"} or None
        Underdamped latent Langevin (:class:`~latentlab.dynamics.langevin.LatentLangevin`) or its
        overdamped limit (:class:`~latentlab.dynamics.brownian.BrownianDynamics`).  ``None``: the model's
        (set by calibration), else "langevin".
    friction_model : {"coordinate", "atomic"} or None
        Friction ``-gamma dQ/dt`` or the same collision rate ``gamma`` on every atom carried through the
        map (docs/theory.md section 4).  ``None``: the model's, else "coordinate".
    temperature : float, K, optional
        Default: the model's.  A temperature-conditioned V is evaluated at it; an exact potential is
        rebuilt for it; any other V stays the potential of its training temperature.
    device : str or torch.device
    seed : int, optional
        Seeds the starting points and the integrator's noise (runs are reproducible).
    start : "data" or array, shape=(n_walkers, n_cg) or (n_cg,)
        ``"data"``: random latent states stored in the model (from its training data).
    metropolis : bool
        Accept/reject each Hamiltonian step (GHMC; exact for any dt).
    dtype : torch dtype of the walkers (float64 default).
    potential_dtype : torch dtype of the network, optional
        Default: the precision the network was trained in (float32 for trained models: about 2x faster
        than float64 and exactly what training fitted); the walkers stay in ``dtype``.
    reporters : sequence of reporters
        Called every ``reporter.interval`` steps (:mod:`latentlab.simulation.reporters`).
    """

    def __init__(self, model, *, n_walkers: int = 256, dt: float = 0.002, gamma: float | str | None = None,
                 temperature: float | None = None, device="cpu", seed: int | None = 0, start="data",
                 metropolis: bool = False, dtype=torch.float64, potential_dtype=None, reporters=(),
                 dynamics: str | None = None, friction_model: str | None = None):
        if int(n_walkers) < 1:
            fail("n_walkers", f"got {n_walkers}", "use at least 1 walker")
        self.temperature = check_positive(temperature if temperature is not None else model.temperature,
                                          "temperature", "K")
        self.device = torch.device(device)
        model = tabulated(model)
        self.model = model
        energy = model.energy_function(self.temperature)
        if potential_dtype is None:
            potential_dtype = next((p.dtype for p in model.potential.parameters()), dtype)
        potential = _frozen(energy, self.device, potential_dtype)
        q0 = _inside_bounds(start_points(model, int(n_walkers), start, seed), model.bounds, model.periodic)
        self.gamma_requested = gamma
        dynamics = check_dynamics(dynamics or model.dynamics)
        friction_model = check_friction_model(friction_model or model.friction_model)
        if gamma is None:  # the model's friction, unless it is in the units of another friction model
            same_units = friction_model == model.friction_model
            gamma = model.friction if model.friction is not None and same_units else "auto"
        if isinstance(gamma, str):
            if gamma != "auto":
                fail("gamma", f"got {gamma!r}", f"give a friction in {FRICTION_UNITS[friction_model]} or 'auto'")
            gamma = auto_gamma(model.mass, q0, friction_model=friction_model)
        self.integrator = INTEGRATORS[dynamics](
            _Cast(potential, dtype) if potential_dtype not in (None, dtype) else potential, model.mass,
            KB * self.temperature, dt, gamma, periodic=model.periodic, bounds=model.bounds, metropolis=metropolis,
            device=self.device, dtype=dtype, seed=seed, friction_model=friction_model)
        self.state: LangevinState = self.integrator.init(q0.to(device=self.device, dtype=dtype))
        self.seed = seed
        #: What the user should know about this run before trusting it (e.g. a temperature V does not hold at).
        self.notes = [n for n in [model.temperature_note(self.temperature)] if n]
        self.reporters = list(reporters)
        self.interrupted = False
        self.seconds = 0.0
        self._stop = threading.Event()
        self._kinetic = array("d")  # <P^T A P> / (N kT) after every step
        self._steps_requested = 0

    # ------------------------------------------------------------------ properties
    n_walkers = property(attrgetter("state.n_walkers"), doc="Number of walkers.")
    dt = property(attrgetter("integrator.dt"), doc="Time step, ps.")
    gamma = property(attrgetter("integrator.gamma"),
                     doc="Friction (amu/ps; 1/ps for atomic friction), as resolved ('auto' or the model's).")
    kT = property(attrgetter("integrator.kT"), doc="Thermal energy k_B T, kJ/mol.")
    dynamics = property(attrgetter("integrator.dynamics"), doc="'langevin' or 'brownian'.")

    def __repr__(self) -> str:
        units = "1/ps" if self.integrator.friction_model == "atomic" else "amu/ps"
        return (f"Simulation({self.n_walkers} walkers, {self.dynamics} with {self.integrator.friction_model} friction "
                f"{self.gamma:.4g} {units}, dt {self.dt:g} ps, {self.temperature:g} K, step {self.step_count}; "
                f"{self.model!r})")

    @property
    def step_count(self) -> int:
        """Steps done since the walkers started."""
        return int(self.state.step)

    @property
    def time_ps(self) -> float:
        return self.state.step * self.integrator.dt

    def kinetic_temperature_ratio(self, instantaneous: bool = False) -> float:
        """``<P^T A P> / (N kT)`` (1 at equipartition): the running mean over the run, or the current value."""
        if instantaneous or not self._kinetic:
            return 2.0 * float(self.state.kinetic_energy().mean()) / (self.state.Q.shape[1] * self.kT)
        return float(np.mean(self._kinetic))

    def kinetic_temperature_error(self) -> float:
        """Standard error of :meth:`kinetic_temperature_ratio` (inf before 10 steps).

        From the series' autocorrelation time, but at least what a run shorter than the friction's slowest
        momentum relaxation can know: equipartition makes the walker mean of ``P^T A P / (N kT)`` fluctuate by
        ``sqrt(2 / (N n_walkers))``, and the friction renews it every ``1 / (r dt)`` steps at the slowest rate
        ``r`` (``gamma`` times the smallest eigenvalue of A, or ``gamma`` for atomic friction), so a run of n
        steps holds at most ``n r dt`` independent values.  (The autocorrelation estimate of a series not much
        longer than its correlation time comes out too small: short runs of few walkers were flagged for noise.)
        """
        n = len(self._kinetic)
        if n < 10:
            return math.inf
        from latentlab.dynamics.statistics import mean_and_stderr

        series = float(mean_and_stderr(np.asarray(self._kinetic)[:, None])[1])
        integ = self.integrator
        if integ.gamma == 0.0:
            rate = 0.0
        elif integ.friction_model == "atomic":
            rate = integ.gamma
        else:  # the slowest direction of the typical walker
            w_min = torch.linalg.eigvalsh(self.state.A.detach().to(torch.float64)).amin(1).median()
            rate = integ.gamma * max(float(w_min), 0.0)
        sd = math.sqrt(2.0 / (self.state.Q.shape[1] * self.n_walkers))
        steps_per_value = 1.0 / (rate * integ.dt) if rate > 0.0 else math.inf
        return max(series, sd * math.sqrt(min(1.0, steps_per_value / n)))

    # ------------------------------------------------------------------ running
    def stop(self) -> None:
        """Ask a running :meth:`run` to stop after the current chunk of steps (thread-safe)."""
        self._stop.set()

    def step(self, n_steps: int) -> None:
        """Advance ``n_steps`` without reporting (burn-in)."""
        for _ in range(int(n_steps)):
            self.integrator.step(self.state, 1)
            self._kinetic.append(self.kinetic_temperature_ratio(instantaneous=True))

    def run(self, n_steps: int) -> dict:
        """Advance ``n_steps``, calling each reporter every ``reporter.interval`` steps.

        A reporter (or :meth:`stop`, or Ctrl-C) can end the run early; every reporter is then closed as
        well (a SIM file holds what was done).  Returns :meth:`summary`.
        """
        if int(n_steps) < 1:
            fail("n_steps", f"got {n_steps}", "use a positive number of steps")
        for r in self.reporters:
            if int(getattr(r, "interval", 0)) < 1:
                fail("reporter", f"{type(r).__name__} has interval {getattr(r, 'interval', None)!r}",
                     "give every reporter a positive interval in steps")
        self._stop.clear()
        self.interrupted = False
        self._steps_requested += int(n_steps)
        end = self.state.step + int(n_steps)
        t0 = time.perf_counter()
        try:
            while self.state.step < end and not self._stop.is_set():
                due = [r.interval - self.state.step % r.interval for r in self.reporters]
                self.step(min([end - self.state.step, *due]))
                for r in self.reporters:
                    if self.state.step % r.interval == 0 and r.report(self):
                        self._stop.set()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            self.seconds += time.perf_counter() - t0
            for r in self.reporters:
                close = getattr(r, "close", None)
                if close is not None:
                    close(self)
        return self.summary()

    # ------------------------------------------------------------------ results
    def diagnostics(self) -> dict:
        """Integrator counters plus the kinetic temperature ratio (see :meth:`LatentLangevin.diagnostics`)."""
        return {**self.integrator.diagnostics(self.state), "kinetic_temperature_ratio": self.kinetic_temperature_ratio(),
                "kinetic_temperature_stderr": self.kinetic_temperature_error()}

    def problems(self, max_reseeded_fraction: float = MAX_RESEEDED_FRACTION,
                 max_temperature_error: float = MAX_TEMPERATURE_ERROR) -> list[str]:
        """What makes this run untrustworthy (empty when healthy), each with the fix.

        More than ``max_reseeded_fraction`` of the walker-steps re-seeded (blow-ups: the time step is too
        large for the stiffest latent vibration), or the kinetic temperature off by more than
        ``max_temperature_error`` beyond three standard errors of its time average (the integrator does
        not sample the right momenta at this dt; short runs of few walkers are not flagged for their noise).
        """
        d = self.diagnostics()
        out = []
        if d["reseeded_fraction"] > max_reseeded_fraction:
            out.append(f"{d['reseeded_fraction']:.1%} of the walker-steps blew up and were re-seeded (allowed "
                       f"{max_reseeded_fraction:.1%}): the time step {self.dt:g} ps is too large. Fix: use --dt "
                       f"{self.dt / 4:.2g} or smaller")
        ratio = d["kinetic_temperature_ratio"]
        if self.dynamics == "brownian":  # momenta drawn at equilibrium: nothing to check
            return out
        if not abs(ratio - 1.0) <= max_temperature_error + 3.0 * self.kinetic_temperature_error():
            model_t = self.model.temperature if self.model is not None else self.temperature
            if abs(self.temperature / model_t - 1.0) > 0.1:  # started from frames of the model's temperature
                out.append(f"the kinetic temperature is {ratio:.3f} x the target (allowed +-{max_temperature_error:.0%}) "
                           f"at {self.temperature:g} K: the walkers started from the model's {model_t:g}-K frames and "
                           "have not settled, or the time step is too large. Fix: run longer (or burn in), or use "
                           f"--dt {self.dt / 2:.2g}")
            else:
                out.append(f"the kinetic temperature is {ratio:.3f} x the target (allowed +-{max_temperature_error:.0%}): "
                           f"the time step {self.dt:g} ps is too large for this model. Fix: use --dt {self.dt / 2:.2g} "
                           "or smaller, or --metropolis")
        return out

    def summary(self) -> dict:
        """JSON-ready description of the run (the metadata of a SIM file)."""
        out = {"temperature": self.temperature, "dt": self.dt, "gamma": self.gamma,
               "gamma_units": FRICTION_UNITS[self.integrator.friction_model],
               "dynamics": self.dynamics,
               "friction_model": self.integrator.friction_model,
               "gamma_requested": self.gamma_requested, "walkers": self.n_walkers,
               "steps_requested": self._steps_requested, "steps_done": self.step_count, "simulated_ps": self.time_ps,
               "metropolis": self.integrator.metropolis, "device": str(self.device), "seed": self.seed,
               "diagnostics": self.diagnostics(), "interrupted": self.interrupted, "seconds": self.seconds,
               "notes": list(self.notes)}
        m = self.model
        if m is None:
            return out
        return {"map": m.map_spec, "map_definition": m.map_definition, "training_frames": m.training.get("frames"),
                "names": m.names, "units": m.units, "periodic": m.periodic,
                "bounds": [None if b is None else [float(b[0]), float(b[1])] for b in m.bounds],
                "convention": m.convention, "dataset": m.training.get("dataset"), "model_kind": m.kind,
                "model_temperature": m.temperature, "mass_model": {"kind": m.mass.kind, "consistency": m.mass.consistency},
                **out}

    @classmethod
    def wrap(cls, integrator: LatentLangevin, state: LangevinState, model=None, reporters=()) -> "Simulation":
        """A Simulation around an integrator and state made elsewhere (any V and A callables; no model needed)."""
        sim = cls.__new__(cls)
        sim.model, sim.integrator, sim.state = model, integrator, state
        sim.temperature = integrator.kT / KB
        sim.device, sim.seed, sim.gamma_requested = integrator.device, None, integrator.gamma
        sim.reporters, sim.interrupted, sim.seconds, sim.notes = list(reporters), False, 0.0, []
        sim._stop, sim._kinetic, sim._steps_requested = threading.Event(), array("d"), 0
        return sim


class _Cast(torch.nn.Module):
    """V evaluated in the network's dtype, returned in the walkers' dtype (``potential_dtype``)."""

    def __init__(self, potential, dtype):
        super().__init__()
        self.potential, self.dtype = potential, dtype
        self.net_dtype = next((p.dtype for p in potential.parameters()), dtype)

    def forward(self, Q):
        return self.potential(Q.to(self.net_dtype)).to(self.dtype)

    def energy_and_gradient(self, Q):
        v, g = self.potential.energy_and_gradient(Q.to(self.net_dtype))
        return v.to(self.dtype), g.to(self.dtype)


def tabulated(model):
    """The model with its fixed functions of up to 3 coordinates tabulated (support prior, kernel A(Q)).

    Models trained by this latentlab carry their tables already; models of 0.1.0 get them here, once.
    """
    from dataclasses import replace

    from latentlab.maps.mass_model import tabulate_mass

    mass = tabulate_mass(model.mass)
    support = getattr(model.potential, "support", None)
    if support is None or support.table is not None or support.n_bins == 0 or model.n_cg > 3:
        return model if mass is model.mass else replace(model, mass=mass)
    import copy

    potential = copy.deepcopy(model.potential)
    potential.support.tabulate()
    return replace(model, potential=potential, mass=mass)


def _frozen(potential, device, dtype):
    """A copy of V for sampling: on ``device`` in ``dtype``, no parameter gradients, eval mode."""
    import copy

    if not isinstance(potential, torch.nn.Module):
        return potential
    pot = copy.deepcopy(potential).to(device=device, dtype=dtype)
    pot.requires_grad_(False)
    return pot.eval()

