"""Reporters: what a :class:`latentlab.simulation.Simulation` does with its walkers every so many steps.

A reporter has an ``interval`` (steps) and ``report(simulation) -> bool | None``, called every
``interval`` steps (returning True stops the run); an optional ``close(simulation)`` is called when a run
ends, however it ends.  Like OpenMM's reporters, they are duck-typed: any object with these members works.

- :class:`TrajectoryReporter` keeps Q (and the kinetic energy and H) in memory;
- :class:`SimFileReporter` also writes them to a SIM file when the run ends (Ctrl-C included);
- :class:`ProgressReporter` shows a tqdm progress bar;
- :class:`HistogramReporter` fills histograms of each coordinate on the reference's bins and compares the
  recent samples with the reference (JS divergence and its noise floor) every few seconds;
- :class:`CallbackReporter` calls a function (a UI's live update, cancellation).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import torch

from latentlab.validation import fail


def _interval(every) -> int:
    if int(every) < 1:
        fail("every", f"got {every}", "report every 1 or more steps")
    return int(every)


class TrajectoryReporter:
    """Record every ``every`` steps: Q ``(n_walkers, n_cg)``, ``P^T A P`` and H per walker, and the time.

    ``record()`` returns ``Q (n_records, n_walkers, n_cg)``, ``kinetic (n_records, n_walkers)`` (``P^T A P``,
    kJ/mol), ``H (n_records, n_walkers)`` (kJ/mol) and ``time (n_records,)`` (ps) as CPU tensors.
    """

    def __init__(self, every: int = 10, energies: bool = True):
        self.interval = _interval(every)
        self.energies = bool(energies)
        self.Q, self.kinetic, self.H, self.time, self.steps = [], [], [], [], []

    def report(self, simulation) -> None:
        st = simulation.state
        self.Q.append(st.Q.detach().cpu().clone())
        self.time.append(simulation.time_ps)
        self.steps.append(simulation.step_count)
        if self.energies:
            ke = st.kinetic_energy().detach().cpu()
            self.kinetic.append(2.0 * ke)
            self.H.append(ke + st.V.detach().cpu())

    def record(self) -> dict:
        n_w = self.Q[0].shape[0] if self.Q else 0
        stack = lambda xs, shape: torch.stack(xs) if xs else torch.zeros(shape, dtype=torch.float64)  # noqa: E731
        return {"Q": stack(self.Q, (0, n_w, 0)), "kinetic": stack(self.kinetic, (0, n_w)), "H": stack(self.H, (0, n_w)),
                "time": torch.tensor(self.time, dtype=torch.float64)}

    def restarts(self, simulation) -> np.ndarray:
        """``(n_events, 2)`` int: ``[record, walker]`` for every walker re-seeded just before that record."""
        events = [(s, w) for s, w in simulation.state.restarts if self.steps and self.steps[0] - self.interval < s <= self.steps[-1]]
        if not events:
            return np.zeros((0, 2), dtype=np.int64)
        steps, walkers = np.asarray(events).T
        return np.stack([np.searchsorted(np.asarray(self.steps), steps, side="left"), walkers], 1).astype(np.int64)

    def energy_drift(self, kT: float) -> dict:
        """Statistics of ``(H(t) - H(0)) / kT`` over the record (meaningful at gamma = 0 without Metropolis)."""
        h = torch.stack(self.H)
        dh = (h - h[0]) / kT  # (T, W)
        return {"mean_abs": float(dh.abs().mean()), "max_abs": float(dh.abs().max()), "final_mean": float(dh[-1].mean())}


class SimFileReporter(TrajectoryReporter):
    """A :class:`TrajectoryReporter` that writes a SIM file (:mod:`latentlab.simulation.simfile`) when the run ends.

    Parameters
    ----------
    path : str
        Output ``.npz`` (written atomically; check it with :func:`latentlab.io.output_path` first).
    every : int
        Steps between records.
    metadata : dict, optional
        Added to the file's metadata (e.g. the model file's path).
    """

    def __init__(self, path: str, every: int = 10, metadata: dict | None = None):
        super().__init__(every, energies=True)
        self.path = path
        self.metadata = dict(metadata or {})
        self.written = None

    def close(self, simulation) -> None:
        from latentlab.simulation.simfile import save_simulation

        Q = torch.stack(self.Q).numpy() if self.Q else np.zeros((0, simulation.n_walkers, simulation.model.n_cg))
        kin = (torch.stack(self.kinetic).mean(1) / (simulation.model.n_cg * simulation.kT)).numpy() if self.kinetic else np.zeros(0)
        meta = {**simulation.summary(), "record_every": self.interval, "out": self.path, **self.metadata}
        self.written = save_simulation(self.path, Q, np.asarray(self.time), meta, kinetic_temperature_ratio=kin,
                                       restarts=self.restarts(simulation))


class ProgressReporter:
    """A tqdm progress bar over ``total`` steps, updated every ``every`` steps."""

    def __init__(self, total: int, every: int = 10, desc: str = "latent Langevin"):
        from tqdm.auto import tqdm

        self.interval = _interval(every)
        self.bar = tqdm(total=int(total), unit="step", desc=desc)
        self._last = None

    def report(self, simulation) -> None:
        done = simulation.step_count if self._last is None else simulation.step_count - self._last
        self._last = simulation.step_count
        self.bar.update(done)
        self.bar.set_postfix(T_kin=f"{simulation.kinetic_temperature_ratio(True):.3f}",
                             reseeded=simulation.state.counters["reseeded"])

    def close(self, simulation) -> None:
        self.bar.close()


class CallbackReporter:
    """``function(simulation) -> bool | None`` every ``every`` steps; True stops the run."""

    def __init__(self, function, every: int = 10):
        self.interval = _interval(every)
        self.function = function

    def report(self, simulation):
        return self.function(simulation)


class HistogramReporter:
    """Running histograms of each coordinate on fixed bins, and the JS divergence of recent samples vs a reference.

    Parameters
    ----------
    reference : array, shape=(n_frames, n_cg)
        Ground-truth latent coordinates in time order (the JS noise floor splits them in halves in time).
    edges : list of np.ndarray
        Bin edges per coordinate (:func:`latentlab.binning.regular_edges`).
    periodic : sequence of bool
    every : int
        Steps between records.
    burn_in_records : int
        Records not added to the histograms (the walkers start on data frames and relax first).
    js_every : float, s
        Wall-clock seconds between JS estimates (each costs a histogram of recent samples).
    keep : int
        Number of recent records the JS estimate uses (at most 1024 walkers each).
    trace_walkers, trace_length : int
        The first ``trace_walkers`` walkers' recent ``trace_length`` states are kept for plots.

    All state read by another thread goes through :meth:`snapshot` (a lock guards it).
    """

    def __init__(self, reference, edges, periodic, every: int = 2, burn_in_records: int = 10, js_every: float = 1.0,
                 keep: int = 200, trace_walkers: int = 4, trace_length: int = 400, names=None):
        self.interval = _interval(every)
        self.reference = np.asarray(reference, dtype=np.float64)
        self.edges = [np.asarray(e) for e in edges]
        self.periodic = [bool(p) for p in periodic]
        self.names = list(names) if names is not None else [f"q{i}" for i in range(len(self.edges))]
        self.burn_in_records, self.js_every = int(burn_in_records), float(js_every)
        self.trace_walkers = int(trace_walkers)
        self.reference_density = [np.histogram(self.reference[:, i], bins=e, density=True)[0]
                                  for i, e in enumerate(self.edges)]
        self._lock = threading.Lock()
        self.counts = [np.zeros(len(e) - 1) for e in self.edges]
        self.n_samples = self.records = 0
        self.samples = deque(maxlen=int(keep))
        self.traces = deque(maxlen=int(trace_length))  # (time, Q of traced walkers (k, N))
        self.kinetic = deque(maxlen=int(trace_length))  # (time, kinetic temperature ratio)
        self.js = deque(maxlen=2000)  # (time, js, floor)
        self.js_latest: dict | None = None
        self.last_Q: np.ndarray | None = None
        self.steps_per_second = self.time = 0.0
        self.reseeded = 0
        self._last_js = 0.0
        self._last_report = None

    def report(self, simulation) -> None:
        Q = simulation.state.Q.detach().cpu().numpy()
        now = time.perf_counter()
        rate = 0.0 if self._last_report is None else self.interval / max(now - self._last_report, 1e-9)
        self._last_report = now
        with self._lock:
            self.records += 1
            if self.records > self.burn_in_records:
                for i, c in enumerate(self.counts):
                    c += np.histogram(Q[:, i], bins=self.edges[i])[0]
                self.n_samples += Q.shape[0]
                self.samples.append(Q[: min(len(Q), 1024)].copy())
            self.traces.append((simulation.time_ps, Q[: self.trace_walkers].copy()))
            self.kinetic.append((simulation.time_ps, simulation.kinetic_temperature_ratio(instantaneous=True)))
            self.last_Q = Q
            self.steps_per_second = rate
            self.reseeded = int(simulation.state.counters["reseeded"])
            self.time = simulation.time_ps
        if now - self._last_js >= self.js_every and self.samples:
            self._last_js = now
            self.update_js(simulation.time_ps)

    def update_js(self, t: float) -> None:
        """Compare the recent samples with the reference (JS divergence, its noise floor and their ratio)."""
        from latentlab.compare import compare_latent

        with self._lock:
            samples = np.concatenate(list(self.samples))
        try:
            out = compare_latent(samples, self.reference, names=self.names, periodic=self.periodic)
            result = {k: float(out[k]) for k in ("js_divergence", "js_noise_floor", "ratio")}
        except ValueError as err:  # keep the simulation running; show why
            result = {"js_divergence": None, "js_noise_floor": None, "ratio": None, "error": str(err)}
        with self._lock:
            self.js_latest = result
            self.js.append((t, result["js_divergence"], result["js_noise_floor"]))

    def densities(self) -> list[np.ndarray]:
        """Normalised model histograms (density per unit of each coordinate)."""
        out = []
        for e, c in zip(self.edges, self.counts):
            total = c.sum()
            out.append(c / (total * np.diff(e)) if total > 0 else np.zeros_like(c))
        return out

    def snapshot(self) -> dict:
        """A consistent copy of everything a live view draws (cheap; called a few times a second)."""
        with self._lock:
            traces = np.stack([q for _, q in self.traces]) if self.traces else None  # (T, k, N)
            return {"names": list(self.names), "edges": self.edges, "reference": self.reference_density,
                    "model": self.densities(), "n_samples": self.n_samples, "records": self.records,
                    "time": self.time, "trace_time": np.asarray([t for t, _ in self.traces]),
                    "traces": traces, "kinetic": np.asarray(list(self.kinetic)) if self.kinetic else np.zeros((0, 2)),
                    "reseeded": self.reseeded,
                    "js": np.asarray([(t, np.nan if j is None else j, np.nan if f is None else f) for t, j, f in self.js])
                    if self.js else np.zeros((0, 3)),
                    "js_latest": self.js_latest, "steps_per_second": self.steps_per_second}
