"""Independent trajectories in Q on one time grid: the input of every kinetic estimator.

A reference data set may hold several replicas (``Dataset.replica``) or restarts
(gaps in ``Dataset.time``); a SIM file holds ``n_walkers`` independent walkers.
:class:`Trajectories` keeps them as a list of separate arrays, so that nothing
downstream (autocorrelation, transition counts, first passages) ever joins two
of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from latentlab.maps.base import Coordinate, LatentCoordinates
from latentlab.validation import fail

#: Relative tolerance on the time step: a larger jump in ``time`` is a restart (a new trajectory).
TIME_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Trajectories(LatentCoordinates):
    """Independent trajectories in Q sharing one frame spacing.

    Build it with :meth:`from_arrays`, :meth:`from_dataset` or :meth:`from_simulation`.

    Attributes
    ----------
    segments : tuple of np.ndarray, each shape=(n_frames_i, n_cg), float64
        One array per independent trajectory (walker, replica or piece between restarts),
        frames in time order, spacing ``dt_ps``.  Periodic coordinates in rad.
    dt_ps : float
        Time between consecutive frames, ps.
    coordinates : tuple of :class:`~latentlab.maps.Coordinate`, length n_cg
        Name, unit and periodicity of each coordinate (``names``, ``units``, ``periodic``); periodic
        coordinates have period 2 pi (dihedrals, rad).
    source : str
        Where the frames came from (for reports).
    map_spec : str or None
        The CG map that produced Q, when known.
    dataset : str or None
        Name of the data set the frames (or the model) come from, when known.
    warnings : tuple of str
        What was noticed while reading (splits at restarts, dropped frames, ...).
    """

    segments: tuple
    dt_ps: float
    coordinates: tuple
    source: str = ""
    map_spec: str | None = None
    dataset: str | None = None
    warnings: tuple = field(default_factory=tuple)

    # ------------------------------------------------------------------ properties
    @property
    def n_trajectories(self) -> int:
        return len(self.segments)

    @property
    def n_frames(self) -> int:
        """Frames in all trajectories together."""
        return int(sum(len(s) for s in self.segments))

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.segments], dtype=int)

    @property
    def total_time_ps(self) -> float:
        """Simulated time covered by frame-to-frame intervals, summed over trajectories, ps."""
        return float(sum(max(len(s) - 1, 0) for s in self.segments) * self.dt_ps)

    def coordinate(self, name: str) -> list[np.ndarray]:
        """One coordinate of every trajectory (list of ``(n_frames_i,)`` arrays)."""
        if name not in self.names:
            fail("coordinate", f"unknown coordinate {name!r}", f"use one of {', '.join(self.names)}")
        i = self.names.index(name)
        return [s[:, i] for s in self.segments]

    def __repr__(self) -> str:
        return (f"Trajectories({self.n_trajectories} trajectories, {self.n_frames} frames, dt={self.dt_ps:g} ps, "
                f"coordinates={list(self.names)}, source={self.source!r})")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, trajectories, dt_ps: float, *, names=None, periodic=None, units=None, source: str = "arrays",
                    map_spec: str | None = None, dataset: str | None = None, min_frames: int = 2) -> "Trajectories":
        """Independent trajectories from arrays.

        Parameters
        ----------
        trajectories : array or list of arrays, each shape=(n_frames_i, n_cg) or (n_frames_i,)
            A single 2-D array is one trajectory; a 3-D array ``(n_records, n_walkers, n_cg)`` is
            read as walkers (the layout of a SIM file).  A list holds independent trajectories
            that are never joined.
        dt_ps : float
            Frame spacing, ps.
        names, periodic, units : sequences of length n_cg, optional
            Default ``q0, q1, ...``, not periodic, unit ``"1"``.
        min_frames : int
            Shorter pieces (e.g. after dropping non-finite frames) are dropped with a warning.
        """
        dt_ps = _check_dt(dt_ps)
        if isinstance(trajectories, np.ndarray) or not isinstance(trajectories, (list, tuple)):
            arr = np.asarray(trajectories, dtype=np.float64)
            if arr.ndim == 3:
                segs = [arr[:, w, :] for w in range(arr.shape[1])]
            elif arr.ndim in (1, 2):
                segs = [arr]
            else:
                fail("trajectories", f"has shape {arr.shape}", "pass (n_frames, n_cg), (n_records, n_walkers, n_cg) "
                     "or a list of (n_frames_i, n_cg) arrays")
        else:
            segs = [np.asarray(t, dtype=np.float64) for t in trajectories]
        if not segs:
            fail("trajectories", "is empty", "pass at least one trajectory")
        segs = [s[:, None] if s.ndim == 1 else s for s in segs]
        n_cg = segs[0].shape[1] if segs[0].ndim == 2 else -1
        for k, s in enumerate(segs):
            if s.ndim != 2 or s.shape[1] != n_cg:
                fail("trajectories", f"trajectory {k} has shape {s.shape}, expected (n_frames, {n_cg})",
                     "give every trajectory the same coordinates")
        names = tuple(str(n) for n in names) if names is not None else tuple(f"q{i}" for i in range(n_cg))
        periodic = tuple(bool(p) for p in periodic) if periodic is not None else (False,) * n_cg
        units = tuple(str(u) for u in units) if units is not None else tuple("rad" if p else "1" for p in periodic)
        for arg, seq in (("names", names), ("periodic", periodic), ("units", units)):
            if len(seq) != n_cg:
                fail(arg, f"has {len(seq)} entries but the trajectories have {n_cg} coordinates", "give one per coordinate")
        if len(set(names)) != len(names):
            fail("names", f"{list(names)} has duplicates", "give every coordinate its own name")
        warnings = []
        pieces = []
        n_bad = 0
        for s in segs:
            good = np.isfinite(s).all(axis=1)
            n_bad += int((~good).sum())
            pieces.extend(_runs(s, good))
        if n_bad:
            warnings.append(f"{n_bad} non-finite frame(s) dropped; the trajectories were split there")
        kept = [p for p in pieces if len(p) >= int(min_frames)]
        if len(kept) < len(pieces):
            warnings.append(f"{len(pieces) - len(kept)} piece(s) shorter than {min_frames} frames dropped")
        if not kept:
            fail("trajectories", f"no trajectory has at least {min_frames} finite frames",
                 "pass longer trajectories")
        kept = [_wrap(p, periodic) for p in kept]
        coordinates = tuple(Coordinate(n, u, p) for n, u, p in zip(names, units, periodic))
        return cls(tuple(kept), dt_ps, coordinates, source=source, map_spec=map_spec, dataset=dataset,
                   warnings=tuple(warnings))

    @classmethod
    def from_dataset(cls, dataset, spec: str | None = None, *, cg_map=None, dt_ps: float | None = None) -> "Trajectories":
        """Map a reference data set to Q and split it into its independent trajectories.

        Replicas (``dataset.trajectory_slices()``) are separate trajectories, and so is every
        piece between two jumps of ``dataset.time`` that differ from the frame spacing
        (restarts, gaps, concatenated runs).

        Parameters
        ----------
        dataset : latentlab.data.Dataset
        spec : str, optional
            Map spec (default: the data set's own map).
        cg_map : CGMap, optional
            An already built map (overrides ``spec``).
        dt_ps : float, optional
            Frame spacing, ps, for data without a ``time`` axis.
        """
        if getattr(dataset, "weights", None) is not None and not np.allclose(dataset.weights, dataset.weights[0]):
            fail("DATA", f"{dataset.name or dataset.source} has per-frame weights (independent weighted samples, "
                 "not a trajectory)", "kinetics needs time-ordered trajectories, e.g. from 'latentlab generate'")
        cmap = cg_map if cg_map is not None else dataset.map(spec)
        q = cmap.map_frames(dataset.positions)
        q = q.detach().cpu().numpy() if hasattr(q, "detach") else np.asarray(q)
        q = np.asarray(q, dtype=np.float64)
        time = None if dataset.time is None else np.asarray(dataset.time, dtype=np.float64)
        warnings = []
        if time is None:
            if dt_ps is None:
                fail("DATA", f"{dataset.name or dataset.source} has no time axis (independent configurations, not "
                     "a trajectory): it has no kinetics to measure, compare with or calibrate against",
                     "use a data set with a time axis; frames of a trajectory stored without times take the frame "
                     "spacing (dt_ps in Python, --dt in latentlab import)")
            step = _check_dt(dt_ps)
            pieces = [q[sl] for sl in dataset.trajectory_slices()]
        else:
            steps = np.concatenate([np.diff(time[sl]) for sl in dataset.trajectory_slices()] or [np.zeros(0)])
            positive = steps[steps > 0]
            if dt_ps is not None:
                step = _check_dt(dt_ps)
            elif positive.size:
                step = float(np.median(positive))
            else:
                fail("DATA", "has fewer than two frames per trajectory", "kinetics needs trajectories of >= 2 frames")
            pieces = []
            n_cut = 0
            for sl in dataset.trajectory_slices():
                t = time[sl]
                jump = np.abs(np.diff(t) - step) > TIME_TOLERANCE * step
                cut = np.nonzero(jump)[0] + 1
                n_cut += len(cut)
                pieces.extend(np.split(q[sl], cut))
            if n_cut:
                warnings.append(f"the time axis jumps {n_cut} time(s) (restarts or gaps): split into separate "
                                "trajectories there")
        name = getattr(dataset, "name", "") or getattr(dataset, "source", "")
        out = cls.from_arrays(pieces, step, names=cmap.names, periodic=cmap.periodic, units=cmap.units,
                              source=getattr(dataset, "source", "") or name, map_spec=getattr(cmap, "spec", None) or spec,
                              dataset=name)
        n_rep = dataset.n_replicas if hasattr(dataset, "n_replicas") else 1
        if n_rep > 1:
            warnings.append(f"{n_rep} replicas analysed as independent trajectories")
        return replace(out, warnings=tuple(warnings) + out.warnings)

    @classmethod
    def from_simulation(cls, sim, *, burn_in: float = 0.0) -> "Trajectories":
        """The walkers of a SIM file (``latentlab simulate``) as independent trajectories.

        Parameters
        ----------
        sim : str or dict
            Path of a SIM file, or the dict of :func:`latentlab.simulation.load_simulation`
            (``Q`` shape=(n_records, n_walkers, n_cg), ``time`` ps, ``metadata`` with ``names``,
            ``periodic``, ``units``, ``map``, ``dt``, ``record_every``).  An optional array
            ``restarts`` shape=(n_events, 2), int, ``[record, walker]``, marks walkers restarted
            (re-seeded) just before that record: they are split there.
        burn_in : float
            Fraction of the records dropped at the start, in [0, 1).
        """
        source = "simulation"
        if not isinstance(sim, dict):
            from latentlab.simulation import load_simulation

            source = str(sim)
            sim = load_simulation(sim)
        meta = sim.get("metadata") or {}
        q = np.asarray(sim["Q"], dtype=np.float64)
        if q.ndim != 3:
            fail("SIM", f"Q has shape {q.shape}", "pass a file written by 'latentlab simulate' (n_records, n_walkers, n_cg)")
        if not 0.0 <= float(burn_in) < 1.0:
            fail("burn_in", f"got {burn_in}", "give a fraction in [0, 1)")
        n_rec = q.shape[0]
        time = np.asarray(sim.get("time", []), dtype=np.float64)
        dt = None
        if time.size >= 2:
            steps = np.diff(time)
            dt = float(np.median(steps))
            if dt <= 0 or np.any(np.abs(steps - dt) > TIME_TOLERANCE * dt):
                fail("SIM", "its time axis is not evenly spaced", "record at a fixed interval (--record-every)")
        if dt is None and meta.get("dt") and meta.get("record_every"):
            dt = float(meta["dt"]) * int(meta["record_every"])
        if dt is None:
            fail("SIM", "has no time step (fewer than two records and no dt/record_every in its metadata)",
                 "simulate for more records")
        start = int(math.floor(float(burn_in) * n_rec))
        warnings = []
        cuts = {}
        restarts = sim.get("restarts")
        if restarts is not None and np.size(restarts):
            for rec, walker in np.asarray(restarts, dtype=int).reshape(-1, 2):
                cuts.setdefault(int(walker), []).append(int(rec) - start)
        segs = []
        for w in range(q.shape[1]):
            traj = q[start:, w, :]
            c = sorted(k for k in cuts.get(w, []) if 0 < k < len(traj))
            segs.extend(np.split(traj, c) if c else [traj])
        if cuts:
            warnings.append(f"{sum(len(v) for v in cuts.values())} walker restart(s): split there")
        reseeded = ((meta.get("diagnostics") or {}).get("reseeded") or 0)
        if reseeded and restarts is None:
            warnings.append(f"{reseeded} walker re-seed(s) happened but the SIM file does not say when; transitions "
                            "across them cannot be excluded")
        n_cg = q.shape[2]
        names = meta.get("names") or [f"q{i}" for i in range(n_cg)]
        periodic = meta.get("periodic") or [False] * n_cg
        units = meta.get("units") or ["rad" if p else "1" for p in periodic]
        from latentlab.simulation.simfile import dataset_name

        out = cls.from_arrays(segs, dt, names=names, periodic=periodic, units=units, source=source,
                              map_spec=meta.get("map"), dataset=dataset_name(meta.get("dataset")))
        if start:
            warnings.append(f"burn-in: first {start} of {n_rec} records dropped")
        return replace(out, warnings=tuple(warnings) + out.warnings)

    # ------------------------------------------------------------------ transformations
    def strided(self, stride: int) -> "Trajectories":
        """Every ``stride``-th frame of each trajectory (frame spacing ``stride * dt_ps``)."""
        stride = int(stride)
        if stride < 1:
            fail("stride", f"got {stride}", "use a positive integer")
        if stride == 1:
            return self
        segs = tuple(s[::stride] for s in self.segments if len(s[::stride]) >= 2)
        if not segs:
            fail("stride", f"{stride} leaves no trajectory with two frames", "use a smaller stride or longer trajectories")
        note = f"strided by {stride} to a frame spacing of {stride * self.dt_ps:g} ps"
        return replace(self, segments=segs, dt_ps=self.dt_ps * stride, warnings=self.warnings + (note,))

    def concatenated(self) -> np.ndarray:
        """All frames in one ``(n_frames, n_cg)`` array, for time-independent statistics only."""
        return np.concatenate(self.segments, axis=0)


def _check_dt(dt_ps) -> float:
    try:
        dt = float(dt_ps)
    except (TypeError, ValueError):
        fail("dt_ps", f"got {dt_ps!r}", "give the time between frames in ps (a positive number)")
    if not math.isfinite(dt) or dt <= 0:
        fail("dt_ps", f"got {dt_ps!r}", "give the time between frames in ps (a positive number)")
    return dt


def _runs(arr: np.ndarray, good: np.ndarray) -> list[np.ndarray]:
    """Maximal runs of consecutive good frames."""
    if good.all():
        return [arr]
    edges = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [arr[a:b] for a, b in zip(starts, ends)]


def _wrap(arr: np.ndarray, periodic) -> np.ndarray:
    """Periodic coordinates wrapped to (-pi, pi]; a copy, never the caller's array."""
    out = np.array(arr, dtype=np.float64, copy=True)
    for i, p in enumerate(periodic):
        if p:
            out[:, i] = np.pi - np.mod(np.pi - out[:, i], 2.0 * np.pi)
    out.setflags(write=False)
    return out
