"""The in-memory data set: positions, forces, energies, masses, topology, temperature.

One representation with ``from_*`` constructors (STYLE.md item 3):

- :meth:`Dataset.from_arrays` — bare arrays with explicit masses and temperature,
  in nm/kJ/mol or Angstrom/kcal/mol (converted on the way in);
- :meth:`Dataset.from_h5` — the project's own HDF5 files (:mod:`latentlab.data.store`);
- :meth:`Dataset.from_trajectory` — any mdtraj-readable trajectory + topology,
  forces from ``.npy``/``.npz``.

Every constructor validates once: shapes, lengths, finite values (NaN/inf
frames are refused with their frame numbers unless ``drop_nonfinite=True``),
masses, temperature > 0, and a length-unit heuristic that refuses positions
that look like Angstrom when nm was declared (and the reverse).

Units inside a Dataset are always nm, ps, amu, kJ/mol, K; forces are
``F = -grad U`` in kJ/mol/nm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from latentlab.units import ANGSTROM_TO_NM, KB, KCAL_TO_KJ
from latentlab.validation import check_positive, fail

UNITS = {"length": "nm", "time": "ps", "mass": "amu", "energy": "kJ/mol", "force": "kJ/mol/nm", "temperature": "K"}
LENGTH_UNITS = {"nm": 1.0, "angstrom": ANGSTROM_TO_NM, "a": ANGSTROM_TO_NM, "å": ANGSTROM_TO_NM}
ENERGY_UNITS = {"kj/mol": 1.0, "kcal/mol": KCAL_TO_KJ}

#: Plausible median nearest-neighbour (or bonded) distance range in nm for
#: molecules: covalent bonds 0.1-0.16 nm, CA-CA 0.38 nm, CG beads up to ~0.6 nm.
_NN_RANGE_NM = (0.06, 0.6)


def _length_factor(unit: str) -> float:
    key = str(unit).strip().lower()
    if key not in LENGTH_UNITS:
        fail("length_unit", f"got {unit!r}", "use 'nm' or 'angstrom'")
    return LENGTH_UNITS[key]


def _energy_factor(unit: str) -> float:
    key = str(unit).strip().lower().replace(" ", "")
    if key not in ENERGY_UNITS:
        fail("energy_unit", f"got {unit!r}", "use 'kJ/mol' or 'kcal/mol'")
    return ENERGY_UNITS[key]


def force_unit_factor(unit: str) -> float:
    """Factor from ``unit`` (``ENERGY/LENGTH``, e.g. ``"kcal/mol/angstrom"``) to kJ/mol/nm."""
    text = str(unit).strip().lower().replace(" ", "")
    energy, _, length = text.rpartition("/")
    if energy not in ENERGY_UNITS or length not in LENGTH_UNITS:
        fail("force_unit", f"got {unit!r}", "write ENERGY/LENGTH with ENERGY kJ/mol or kcal/mol and LENGTH nm or angstrom, "
             "e.g. 'kcal/mol/angstrom'")
    return ENERGY_UNITS[energy] / LENGTH_UNITS[length]


def typical_neighbour_distance(positions: np.ndarray, topology=None) -> float | None:
    """Median bonded distance (if the topology has bonds) or median nearest-neighbour distance, nm.

    ``positions``: shape (n_frames, n_atoms, 3).  Uses up to 5 frames.  None for one atom.
    """
    x = np.asarray(positions[:5], dtype=np.float64)
    if x.shape[1] < 2:
        return None
    if topology is not None:
        bonds = np.array([(a.index, b.index) for a, b in topology.bonds], dtype=int)
        if len(bonds):
            d = np.linalg.norm(x[:, bonds[:, 0]] - x[:, bonds[:, 1]], axis=-1)
            return float(np.median(d))
    sub = x[:, :400]
    d = np.linalg.norm(sub[:, :, None] - sub[:, None], axis=-1)
    d[:, np.arange(sub.shape[1]), np.arange(sub.shape[1])] = np.inf
    return float(np.median(d.min(axis=-1)))


def check_length_unit(positions_nm: np.ndarray, declared: str, topology=None, argument: str = "positions") -> None:
    """Refuse positions whose typical bond/neighbour distance contradicts the declared unit.

    ``positions_nm`` are already converted to nm from ``declared``.
    """
    d = typical_neighbour_distance(positions_nm, topology)
    if d is None or not np.isfinite(d):
        return
    lo, hi = _NN_RANGE_NM
    factor = _length_factor(declared)
    if d > hi and factor == 1.0:
        fail(argument, f"look like Angstrom, not nm: the typical neighbour distance is {d:.3g} nm (expected {lo}-{hi} nm)",
             "declare the unit: length_unit='angstrom' (CLI: --length-unit angstrom), or divide by 10")
    if d < lo and factor != 1.0:
        fail(argument, f"look like nm, not Angstrom: after converting from Angstrom the typical neighbour distance is "
             f"{d:.3g} nm (expected {lo}-{hi} nm)", "declare length_unit='nm' (CLI: --length-unit nm)")
    if d > hi or d < lo:
        fail(argument, f"typical neighbour distance {d:.3g} nm is outside the plausible {lo}-{hi} nm for a molecule",
             "check the length unit, or pass check_units=False for a non-molecular system")


def _as_frames(value, argument: str, n_atoms: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        fail(argument, f"could not be read as a numeric array ({err})", "pass a numeric array of shape (n_frames, n_atoms, 3)")
    if arr.ndim == 2 and arr.shape[-1] == 3:
        fail(argument, f"has shape {arr.shape}, a single frame", f"add a frame axis: {argument}[None] has shape (1, n_atoms, 3)")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        fail(argument, f"has shape {arr.shape}, expected (n_frames, n_atoms, 3)",
             "reshape to (n_frames, n_atoms, 3), e.g. x.reshape(n_frames, -1, 3)")
    if arr.shape[0] == 0:
        fail(argument, "has no frames", "pass at least one frame")
    if n_atoms is not None and arr.shape[1] != n_atoms:
        fail(argument, f"has {arr.shape[1]} atoms but positions have {n_atoms}", "pass arrays for the same atoms in the same order")
    return arr


def _bad_frames(arr: np.ndarray) -> np.ndarray:
    axes = tuple(range(1, arr.ndim))
    return ~np.isfinite(arr).all(axis=axes) if axes else ~np.isfinite(arr)


def _frame_list(idx: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in idx[:10])
    return shown + (" ..." if len(idx) > 10 else "")


def _per_frame_energies(energies, n_frames: int) -> np.ndarray:
    """Potential energies as shape=(n_frames,) float64 (input units), validated."""
    e = np.asarray(energies, dtype=np.float64)
    if e.size == n_frames:
        e = e.reshape(-1)
    if e.ndim != 1 or e.shape[0] != n_frames:
        fail("energies", f"has shape {np.shape(energies)}, expected ({n_frames},)", "pass one potential energy per frame")
    return e


def _per_frame_weights(weights, n_frames: int) -> np.ndarray:
    """Statistical weights as shape=(n_frames,) float64: finite, >= 0, not all zero (not yet normalised)."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != n_frames:
        fail("weights", f"has {w.shape[0]} entries but positions has {n_frames} frames", "pass one weight per frame")
    if not np.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
        fail("weights", "has negative or non-finite entries, or all are zero", "pass finite weights >= 0 (not all 0)")
    return w


def _replica_ids(replica, n_frames: int) -> np.ndarray:
    """Replica ids, shape=(n_frames,) int, each replica's frames contiguous."""
    rep = np.asarray(replica).reshape(-1)
    if rep.shape[0] != n_frames or not np.issubdtype(rep.dtype, np.integer):
        fail("replica", f"has shape {np.shape(replica)} and dtype {rep.dtype}",
             f"pass one integer replica id per frame ({n_frames})")
    starts = rep[np.r_[True, rep[1:] != rep[:-1]]]
    if len(starts) != len(np.unique(starts)):
        fail("replica", "has a replica whose frames are not contiguous",
             "order the frames replica by replica, each in time order")
    return rep


def _time_axis(time, dt, n_frames: int) -> np.ndarray | None:
    """Frame times, shape=(n_frames,) ps, from ``time`` or ``dt * arange(n_frames)`` (at most one of them)."""
    if dt is not None:
        if time is not None:
            fail("dt", "was given together with time", "pass one of them (CLI: --dt PS or --time FILE)")
        time = check_positive(dt, "dt", "ps") * np.arange(n_frames)
    if time is None:
        return None
    t = np.asarray(time, dtype=np.float64).reshape(-1)
    if t.shape[0] != n_frames:
        fail("time", f"has {t.shape[0]} entries but positions has {n_frames} frames", "pass one time (ps) per frame")
    return t


def _atom_masses(masses, topology, n_atoms: int) -> np.ndarray:
    """Masses, shape=(n_atoms,) amu, finite and > 0: given, else the topology's element masses."""
    if masses is None:
        if topology is None:
            fail("masses", "are required without a topology", "pass masses=[...] in amu, one per atom (CLI: --masses m1,m2,...)")
        masses = [a.element.mass if a.element is not None else 0.0 for a in topology.atoms]
    m = np.asarray(masses, dtype=np.float64).reshape(-1) if np.ndim(masses) <= 1 else np.asarray(masses, dtype=np.float64)
    if m.ndim != 1 or m.shape[0] != n_atoms:
        fail("masses", f"has {m.size if m.ndim == 1 else m.shape} entries but the system has {n_atoms} atoms",
             "pass one mass per atom in amu, in the order of the positions")
    if not np.isfinite(m).all() or (m <= 0).any():
        fail("masses", f"has non-positive or non-finite entries at atoms {np.nonzero(~(m > 0))[0][:10].tolist()}",
             "masses must be finite and > 0 amu")
    return m


def _finite_frames(x: np.ndarray, f, e, drop_nonfinite: bool, metadata):
    """Frames free of NaN/inf in positions (n_frames, n_atoms, 3), forces and energies (n_frames,).

    Returns ``(keep, metadata)``: ``keep`` a boolean mask, shape=(n_frames,), or None when every frame is
    finite; with dropped frames, ``metadata`` is a copy that records them (``dropped_frames``,
    ``dropped_frame_indices``).  Non-finite frames without ``drop_nonfinite`` are refused.
    """
    bad = _bad_frames(x)
    if f is not None:
        bad |= _bad_frames(f)
    if e is not None:
        bad |= ~np.isfinite(e)
    if not bad.any():
        return None, metadata
    idx = np.nonzero(bad)[0]
    if not drop_nonfinite:
        fail("data", f"{len(idx)} frame(s) contain NaN or inf (frame indices {_frame_list(idx)})",
             "repair or remove them, or pass drop_nonfinite=True (CLI: --drop-nonfinite) to drop them")
    keep = ~bad
    if not keep.any():
        fail("data", "every frame contains NaN or inf", "check the input files")
    import json

    metadata = dict(metadata or {})
    metadata["dropped_frames"] = int(len(idx)) + int(metadata.get("dropped_frames", 0))
    metadata["dropped_frame_indices"] = json.dumps([int(i) for i in idx])
    return keep, metadata


def _is_set(name: str) -> property:
    """A read-only ``has_...`` property of a :class:`Dataset`: whether its optional field ``name`` is set."""
    return property(lambda self: getattr(self, name) is not None, doc=f"True when ``{name}`` is not None.")


@dataclass
class Dataset:
    """A data set of configurations with forces.

    Attributes
    ----------
    positions : np.ndarray, shape=(n_frames, n_atoms, 3), float32, nm
    forces : np.ndarray or None, shape=(n_frames, n_atoms, 3), float32, kJ/mol/nm
        ``F = -grad U``.  If ``forces_aggregated`` they are already summed over
        each atom's constraint group (constraint-free; see :meth:`cg_forces`).
    energies : np.ndarray or None, shape=(n_frames,), float64, kJ/mol
    masses : np.ndarray, shape=(n_atoms,), float64, amu (physical masses)
    temperature : float, K
    topology : mdtraj.Topology or None
    time : np.ndarray or None, shape=(n_frames,), ps
    default_map : str
        Map spec (see :func:`latentlab.maps.parse_map`) the data set suggests, or "".
    name : str
    constraint_group : np.ndarray or None, shape=(n_atoms,), int
        Atoms sharing an id are rigidly bound by constraints (id = heaviest atom).
    forces_aggregated : bool
    weights : np.ndarray or None, shape=(n_frames,), float64
        Statistical weight of each frame (e.g. importance weights of flow samples), normalised to mean 1;
        None means all frames count equally.  Every estimator that averages over frames uses them.
    replica : np.ndarray or None, shape=(n_frames,), int
        Id of the independent trajectory each frame belongs to (replicas of a Dask ensemble,
        restarts); frames of one replica are contiguous and in time order.  None means one trajectory.
        Nothing that needs time order (time blocks, noise floors, kinetics) crosses a replica boundary.
    metadata : dict
        Provenance (force field, timestep, ...), as stored in the file.
    source : str
        Where the data came from (path or built-in name).
    """

    positions: np.ndarray
    forces: np.ndarray | None
    energies: np.ndarray | None
    masses: np.ndarray
    temperature: float
    topology: object = None
    time: np.ndarray | None = None
    default_map: str = ""
    name: str = ""
    constraint_group: np.ndarray | None = None
    forces_aggregated: bool = False
    weights: np.ndarray | None = None
    replica: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    source: str = ""
    allatom_path: str | None = None

    units = UNITS

    # ------------------------------------------------------------------ basic properties
    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    def __len__(self) -> int:
        return self.n_frames

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return KB * self.temperature

    has_forces = _is_set("forces")
    has_energies = _is_set("energies")
    has_topology = _is_set("topology")
    has_allatom = _is_set("allatom_path")
    has_weights = _is_set("weights")

    @property
    def n_replicas(self) -> int:
        """Number of independent trajectories (1 without replica ids)."""
        return 1 if self.replica is None else int(len(np.unique(self.replica)))

    def trajectory_slices(self) -> list[slice]:
        """One slice of frame indices per independent trajectory, in file order."""
        if self.replica is None or self.n_frames == 0:
            return [slice(0, self.n_frames)]
        cut = np.nonzero(np.diff(self.replica))[0] + 1
        edges = [0, *cut.tolist(), self.n_frames]
        return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]

    def frame_weights(self) -> np.ndarray:
        """Per-frame weights ``(n_frames,)`` with mean 1 (all ones without stored weights)."""
        return np.ones(self.n_frames) if self.weights is None else self.weights

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, frames={self.n_frames}, atoms={self.n_atoms}, T={self.temperature} K, "
                f"forces={self.has_forces}, energies={self.has_energies}, topology={self.has_topology})")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, positions, forces=None, *, masses=None, temperature=None, energies=None, topology=None,
                    time=None, length_unit: str = "nm", energy_unit: str = "kJ/mol", drop_nonfinite: bool = False,
                    check_units: bool = True, name: str = "", default_map: str = "", constraint_group=None,
                    forces_aggregated: bool = False, metadata: dict | None = None, source: str = "arrays",
                    weights=None, replica=None, force_unit: str | None = None, dt: float | None = None) -> "Dataset":
        """Build a data set from arrays, converting units and validating everything once.

        Parameters
        ----------
        positions : array, shape=(n_frames, n_atoms, 3), in ``length_unit``
        forces : array, shape=(n_frames, n_atoms, 3), in ``energy_unit`` / ``length_unit``, optional
            ``F = -grad U`` (not the gradient).
        masses : array, shape=(n_atoms,), amu
            Required unless ``topology`` is given (then element masses are used).
        temperature : float, K, > 0
        energies : array, shape=(n_frames,), in ``energy_unit``, optional
        topology : mdtraj.Topology or path to a PDB, optional
        time : array, shape=(n_frames,), ps, optional
        length_unit : {"nm", "angstrom"}
        energy_unit : {"kJ/mol", "kcal/mol"}
        drop_nonfinite : bool
            Drop frames with NaN/inf in positions, forces or energies instead of refusing them.
        check_units : bool
            Apply the nm/Angstrom heuristic (typical neighbour distance 0.06-0.6 nm).
        weights : array, shape=(n_frames,), optional
            Statistical weights (>= 0, finite, not all 0), stored normalised to mean 1.
        replica : array, shape=(n_frames,), int, optional
            Id of the independent trajectory of each frame; each replica's frames must be contiguous.
        force_unit : str, optional
            Unit of the forces when it is not ``energy_unit/length_unit`` (e.g. ``"kcal/mol/angstrom"``).
        dt : float, ps, optional
            Time between frames: ``time = dt * arange(n_frames)`` (counted before any frame is dropped).

        Notes
        -----
        Frames dropped by ``drop_nonfinite`` leave a trace: ``metadata["dropped_frames"]`` (their
        number) and ``metadata["dropped_frame_indices"]`` (JSON list of their indices in the input),
        and gaps in ``time`` when a time axis was given.
        """
        if temperature is None:
            fail("temperature", "is required for bare arrays", "pass temperature=... in K (CLI: --temperature K)")
        temperature = check_positive(temperature, "temperature", "K")
        lf = _length_factor(length_unit)
        ef = _energy_factor(energy_unit)
        if isinstance(topology, (str, os.PathLike)):
            topology = load_topology(str(topology))
        x = _as_frames(positions, "positions")
        n_frames, n_atoms = x.shape[:2]
        f = None if forces is None else _as_frames(forces, "forces", n_atoms)
        if f is not None and f.shape[0] != n_frames:
            fail("forces", f"has {f.shape[0]} frames but positions has {n_frames}",
                 "pass one force frame per position frame (same trajectory, same stride)")
        e = None if energies is None else _per_frame_energies(energies, n_frames)
        w = None if weights is None else _per_frame_weights(weights, n_frames)
        rep = None if replica is None else _replica_ids(replica, n_frames)
        t = _time_axis(time, dt, n_frames)
        if topology is not None and topology.n_atoms != n_atoms:
            fail("topology", f"has {topology.n_atoms} atoms but positions have {n_atoms}",
                 "use the topology of exactly the atoms in the positions, in the same order")
        m = _atom_masses(masses, topology, n_atoms)
        keep, metadata = _finite_frames(x, f, e, drop_nonfinite, metadata)
        if keep is not None:
            x, f, e, t, w, rep = (None if a is None else a[keep] for a in (x, f, e, t, w, rep))
        x = x * lf
        if check_units:
            check_length_unit(x, length_unit, topology)
        if f is not None:
            f = f * (ef / lf if force_unit is None else force_unit_factor(force_unit))
        if e is not None:
            e = e * ef
        cg = None if constraint_group is None else np.asarray(constraint_group, dtype=np.int64)
        if cg is not None and cg.shape != (n_atoms,):
            fail("constraint_group", f"has shape {cg.shape}, expected ({n_atoms},)", "pass one group id per atom")
        return cls(positions=x.astype(np.float32), forces=None if f is None else f.astype(np.float32), energies=e,
                   masses=m, temperature=temperature, topology=topology, time=t, default_map=default_map, name=name,
                   constraint_group=cg, forces_aggregated=forces_aggregated, metadata=dict(metadata or {}), source=source,
                   weights=None if w is None else w / w.mean(), replica=None if rep is None else rep.astype(np.int64))

    @classmethod
    def from_h5(cls, path: str, block: str = "primary", drop_nonfinite: bool = False, lazy: bool = False) -> "Dataset":
        """Load a latentlab HDF5 file (layout in :mod:`latentlab.data.store`).

        ``lazy``: positions and forces stay in the file (:class:`latentlab.data.lazy.FrameArray`) and are read in
        blocks when used; memory is bounded by the block size, not the file.  A lazy data set is not scanned
        for NaN frames at load (mapping them fails, naming the frames); the small arrays are read as usual.
        """
        from latentlab.data.store import read_h5

        if lazy:
            return cls._lazy_h5(path, block)
        raw = read_h5(path, block)
        attrs = raw["attrs"]
        if "positions" not in raw:
            fail("data", f"{path} has no positions", "regenerate or re-import the file")
        topology = topology_from_pdb_text(raw["topology_pdb"]) if raw.get("topology_pdb") else None
        meta = {k: v for k, v in attrs.items() if k not in ("format", "format_version", "units", "temperature", "name", "default_map")}
        ds = cls.from_arrays(
            raw["positions"], raw.get("forces"), masses=raw["masses"], temperature=attrs.get("temperature"),
            energies=raw.get("energies"), topology=topology, time=raw.get("time"), drop_nonfinite=drop_nonfinite,
            check_units=False, name=str(attrs.get("name", os.path.splitext(os.path.basename(path))[0])),
            default_map=str(attrs.get("default_map", "")), constraint_group=raw.get("constraint_group"),
            forces_aggregated=bool(attrs.get("forces_aggregated", False)), metadata=meta, source=os.path.abspath(path),
            weights=raw.get("weights"), replica=raw.get("replica"),
        )
        if block == "primary" and raw.get("has_allatom"):
            ds.allatom_path = os.path.abspath(path)
        return ds

    @classmethod
    def from_trajectory(cls, trajectory: str, topology=None, forces=None, *, temperature=None,
                        masses=None, energies=None, length_unit: str = "nm", energy_unit: str = "kJ/mol",
                        drop_nonfinite: bool = False, name: str = "", default_map: str = "", time=None,
                        force_unit: str | None = None, dt: float | None = None) -> "Dataset":
        """Load any mdtraj-readable trajectory (+ topology) with forces from ``.npy``/``.npz``.

        mdtraj converts trajectory coordinates to nm itself; ``length_unit``
        and ``energy_unit`` describe the *forces* (``energy_unit/length_unit``,
        unless ``force_unit`` is given) and energies.  ``time`` (ps, one per
        frame) defaults to the trajectory's own time for formats that store
        it (XTC, TRR, NetCDF, mdtraj HDF5; DCD and PDB store none) unless ``dt``
        (ps between frames) is given.
        """
        import mdtraj as md

        from latentlab.data.sniff import file_kind

        _require_file(trajectory, "trajectory")
        if isinstance(topology, (str, os.PathLike)):
            topology = load_topology(str(topology))
        kind = file_kind(trajectory)
        if topology is None and kind in ("dcd", "xtc", "trr", "netcdf"):
            fail("topology", f"{trajectory} is {describe_kind(kind)}, which stores coordinates but no atoms",
                 "pass --topology TOP.pdb (a PDB of exactly these atoms)")
        if kind == "mdtraj-hdf5":
            import importlib.util

            if importlib.util.find_spec("tables") is None:  # mdtraj reads its HDF5 format with PyTables
                fail("trajectory", f"{trajectory} is an mdtraj HDF5 trajectory, which mdtraj reads with PyTables "
                     "(not installed)", "pip install tables, or convert the trajectory to .dcd/.xtc")
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traj = md.load(trajectory, top=topology) if topology is not None else md.load(trajectory)
        except Exception as err:  # mdtraj raises many types for unreadable files
            has_own_topology = os.path.splitext(str(trajectory))[1].lower() in (".pdb", ".h5", ".lh5", ".gro", ".mol2")
            hint = ("pass --topology TOP.pdb (this format stores no atoms)" if topology is None and not has_own_topology
                    else "check that the file is complete and that the trajectory matches the topology")
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            fail("trajectory", f"mdtraj could not read {trajectory} ({describe_kind(kind)}; {type(err).__name__}: {first})",
                 hint)
        f = _load_array(forces, "forces") if isinstance(forces, (str, os.PathLike)) else forces
        if f is not None and force_unit is None:
            # Trajectory coordinates are nm already; forces are in energy_unit per length_unit:
            # per Angstrom -> per nm divides by 0.1.
            f = np.asarray(f, dtype=np.float64) / _length_factor(length_unit)
        e = _load_array(energies, "energies") if isinstance(energies, (str, os.PathLike)) else energies
        if time is None and dt is None and kind in ("xtc", "trr", "netcdf", "mdtraj-hdf5") and traj.time is not None \
                and len(traj.time) == traj.n_frames:
            time = traj.time
        ds = cls.from_arrays(traj.xyz, f,
                             masses=masses, temperature=temperature, energies=e, topology=traj.topology, time=time,
                             length_unit="nm", energy_unit=energy_unit, drop_nonfinite=drop_nonfinite,
                             name=name or os.path.splitext(os.path.basename(trajectory))[0], default_map=default_map,
                             source=os.path.abspath(trajectory), force_unit=force_unit, dt=dt)
        return ds

    # ------------------------------------------------------------------ views
    def allatom(self) -> "Dataset":
        """The all-atom block stored alongside a subset primary block (e.g. chignolin's CA set)."""
        if self.allatom_path is None:
            fail("allatom", f"data set {self.name!r} has no all-atom block", "use the data set itself (it is all-atom)")
        return Dataset.from_h5(self.allatom_path, block="allatom")

    @classmethod
    def _lazy_h5(cls, path: str, block: str) -> "Dataset":
        import h5py

        from latentlab.data.lazy import FrameArray
        from latentlab.data.store import read_h5

        fh = h5py.File(path, "r")
        group = fh if block == "primary" else fh[block]
        small = {k: group[k][()] for k in ("energies", "time", "masses", "constraint_group", "weights", "replica")
                 if k in group}
        raw = read_h5(path, block, skip=("positions", "forces"))
        attrs = raw["attrs"]
        meta = {k: v for k, v in attrs.items() if k not in ("format", "format_version", "units", "temperature", "name", "default_map")}
        pdb = raw.get("topology_pdb")
        w = small.get("weights")
        ds = cls(positions=FrameArray(group["positions"], owner=fh),
                 forces=FrameArray(group["forces"], owner=fh) if "forces" in group else None,
                 energies=small.get("energies"), masses=np.asarray(small["masses"], dtype=np.float64),
                 temperature=check_positive(attrs.get("temperature"), "temperature", "K"),
                 topology=topology_from_pdb_text(pdb) if pdb else None, time=small.get("time"),
                 default_map=str(attrs.get("default_map", "")),
                 name=str(attrs.get("name", os.path.splitext(os.path.basename(path))[0])),
                 constraint_group=small.get("constraint_group"), forces_aggregated=bool(attrs.get("forces_aggregated", False)),
                 metadata={**meta, "lazy": True}, source=os.path.abspath(path),
                 weights=None if w is None else w / w.mean(), replica=small.get("replica"))
        if block == "primary" and raw.get("has_allatom"):
            ds.allatom_path = os.path.abspath(path)
        return ds

    @property
    def lazy(self) -> bool:
        """True when positions and forces are read from the file on demand (``load(path, lazy=True)``)."""
        from latentlab.data.lazy import is_lazy

        return is_lazy(self.positions)

    def frame_block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Positions ``(n, n_atoms, 3)`` nm and constraint-free forces (or None) of frames ``start:stop``, read now."""
        part = self.select_frames(slice(start, stop))
        pos = np.asarray(part.positions)
        if part.forces is None:
            return pos, None
        part.positions, part.forces = pos, np.asarray(part.forces)
        return pos, part.constraint_free_forces()

    def select_frames(self, frames) -> "Dataset":
        """A new data set with the given frames (index array, slice or boolean mask); lazy stays lazy."""
        from latentlab.data.lazy import is_lazy

        idx = np.arange(self.n_frames)[frames]
        sub = lambda a: None if a is None else (a.take(idx) if is_lazy(a) else a[idx])  # noqa: E731
        return Dataset(positions=sub(self.positions), forces=sub(self.forces), energies=sub(self.energies),
                       masses=self.masses, temperature=self.temperature, topology=self.topology, time=sub(self.time),
                       default_map=self.default_map, name=self.name, constraint_group=self.constraint_group,
                       forces_aggregated=self.forces_aggregated, metadata=dict(self.metadata), source=self.source,
                       allatom_path=self.allatom_path, replica=sub(self.replica),
                       weights=None if self.weights is None else self.weights[idx] / self.weights[idx].mean())

    def cg_forces(self, atoms=None) -> np.ndarray:
        """Constraint-free forces on ``atoms``, shape (n_frames, len(atoms), 3), kJ/mol/nm.

        Without constraints (or if the stored forces are already aggregated)
        these are the stored forces.  With constraint groups, the force on a
        heavy atom is summed over its group (the atom and its constrained
        hydrogens): constraint forces cancel in that sum (Kraemer et al.,
        J. Chem. Theory Comput. 19, 8 (2023)).  Positions of the group move
        with the heavy atom under rigid translations, so maps that read heavy
        atoms only can use these forces with ``B grad U`` unchanged.
        """
        if self.forces is None:
            fail("forces", f"data set {self.name!r} has no forces", "load or generate data with forces")
        atoms = np.arange(self.n_atoms) if atoms is None else np.asarray(atoms, dtype=int)
        if self.forces_aggregated or self.constraint_group is None or (self.constraint_group == np.arange(self.n_atoms)).all():
            return self.forces[:, atoms]
        from latentlab.forces.constraints import aggregate_forces

        return aggregate_forces(self.forces, self.constraint_group, atoms).astype(np.float32)

    def constraint_free_forces(self) -> np.ndarray:
        """Forces for force matching, shape (n_frames, n_atoms, 3): each group's total force on its root atom, 0 on the rest.

        Suitable for any map that reads only group roots (heavy atoms).
        """
        if self.forces is None:
            fail("forces", f"data set {self.name!r} has no forces", "load or generate data with forces")
        if self.forces_aggregated or self.constraint_group is None:
            return self.forces
        out = np.zeros_like(self.forces)
        roots = np.unique(self.constraint_group)
        out[:, roots] = self.cg_forces(roots)
        return out

    def map(self, spec: str | None = None):
        """Build a CG map for this data set from a spec string (default: :attr:`default_map`)."""
        from latentlab.maps import parse_map

        spec = spec or self.default_map
        if not spec:
            from latentlab.maps import suggested_map

            fail("map", f"data set {self.name!r} has no default map",
                 f"pass a map spec, e.g. --map '{suggested_map(self.topology, self.n_atoms)}'")
        # a PCA map is fitted to the frames; a lazy data set offers an evenly strided 100,000 of them (read only if used)
        positions = self.positions.take(slice(None, None, max(1, self.n_frames // 100000))) if self.lazy else self.positions
        return parse_map(spec, topology=self.topology, n_atoms=self.n_atoms, masses=self.masses, positions=positions)

    def tensors(self, dtype=None):
        """``(positions, forces)`` as torch tensors (forces constraint-free; None if absent)."""
        import torch

        dtype = dtype or torch.float64
        pos = torch.as_tensor(self.positions, dtype=dtype)
        frc = None if self.forces is None else torch.as_tensor(self.constraint_free_forces(), dtype=dtype)
        return pos, frc

    # ------------------------------------------------------------------ output
    def info(self) -> dict:
        """Summary for ``latentlab info --json``."""
        out = {
            "name": self.name, "source": self.source, "frames": self.n_frames, "atoms": self.n_atoms,
            "temperature": self.temperature, "has_forces": self.has_forces, "has_energies": self.has_energies,
            "has_topology": self.has_topology, "default_map": self.default_map, "units": dict(UNITS),
            "forces_aggregated": self.forces_aggregated, "has_constraint_groups": self.constraint_group is not None,
            "has_allatom": self.has_allatom, "has_weights": self.has_weights, "replicas": self.n_replicas,
        }
        if self.weights is not None:
            w = self.weights
            out["weights_ess_fraction"] = float(w.sum() ** 2 / (w**2).sum() / len(w))
        if self.time is not None and len(self.time):
            out["time_ps"] = [float(self.time[0]), float(self.time[-1])]
        out["dropped_frames"] = int(self.metadata.get("dropped_frames", 0))
        for key in ("forcefield", "solvent", "timestep_ps", "friction_per_ps", "constraints", "hydrogen_mass_amu",
                    "save_every_ps", "seed", "platform", "selection", "system", "imported_from", "topology_source",
                    "force_check"):
            if key in self.metadata:
                v = self.metadata[key]
                out[key] = v.item() if hasattr(v, "item") else v
        if self.source and os.path.isfile(self.source):
            out["file_bytes"] = os.path.getsize(self.source)
        if self.has_allatom:
            import h5py

            with h5py.File(self.allatom_path, "r") as fh:
                out["allatom_frames"] = int(fh["allatom/positions"].shape[0])
                out["allatom_atoms"] = int(fh["allatom/positions"].shape[1])
        return out

    def save(self, path: str) -> str:
        """Write this data set to ``path`` in the latentlab HDF5 format (atomically)."""
        from latentlab.data.store import write_h5

        attrs = {k: v for k, v in self.metadata.items() if isinstance(v, (str, int, float, bool, np.generic))}
        attrs.update(name=self.name, temperature=float(self.temperature), default_map=self.default_map,
                     forces_aggregated=bool(self.forces_aggregated))
        write_h5(path, dict(positions=self.positions, forces=self.forces, energies=self.energies, time=self.time,
                            masses=self.masses, topology_pdb=topology_to_pdb_text(self.topology, self.positions[0]),
                            constraint_group=self.constraint_group, weights=self.weights, replica=self.replica), attrs)
        return path


# ---------------------------------------------------------------------- helpers


def _require_file(path, argument: str) -> None:
    if not os.path.exists(str(path)):
        raise FileNotFoundError(f"{argument}: {path} does not exist. Fix: check the path")


def describe_kind(kind: str) -> str:
    """Words for a :func:`latentlab.data.sniff.file_kind` kind."""
    from latentlab.data.sniff import describe

    return describe(kind)


def _load_array(path, argument: str) -> np.ndarray:
    """Load ``.npy`` or ``.npz`` (key ``argument`` or the only array); other kinds of file are named and refused."""
    from latentlab.data.sniff import check_kind

    path = str(path)
    _require_file(path, argument)
    check_kind(path, ("npy", "npz"), argument, "a NumPy .npy/.npz array",
               fix=f"save the {argument} with numpy.save / numpy.savez")
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as err:
        fail(argument, f"{path} could not be read as .npy/.npz ({type(err).__name__}: {err})",
             "save it again with numpy.save / numpy.savez (the file may be truncated)")
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            keys = list(obj.files)
            try:
                if argument in keys:
                    return obj[argument]
                if len(keys) == 1:
                    return obj[keys[0]]
            except Exception as err:  # a damaged member
                fail(argument, f"{path} could not be read as .npz ({type(err).__name__}: {err})",
                     "save it again with numpy.savez (the file may be truncated)")
            fail(argument, f"{path} holds arrays {keys} and none is named '{argument}'", f"save the array under the key '{argument}'")
    return obj


#: Kinds of file that can never hold a topology.
_NOT_TOPOLOGY = ("empty", "directory", "unreadable", "latentlab-data", "hdf5", "hdf5-damaged", "latentlab-model",
                 "latentlab-checkpoint", "torch-zip", "latentlab-simulation", "npz", "npy", "zip", "png", "pickle",
                 "dcd", "xtc", "trr", "netcdf")


def load_topology(path: str):
    """An mdtraj topology from a PDB (or any file mdtraj reads a topology from)."""
    import mdtraj as md

    from latentlab.data.sniff import check_kind, file_kind

    _require_file(path, "topology")
    kind = file_kind(path)
    if kind in _NOT_TOPOLOGY:
        check_kind(path, (), "topology", "a topology (PDB)", fix="pass a PDB file of exactly these atoms")
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            top = md.load_topology(path)
    except Exception as err:
        fail("topology", f"mdtraj could not read a topology from {path} ({type(err).__name__}: {err})", "pass a PDB file")
    if top.n_atoms == 0:
        fail("topology", f"{path} has no atoms", "pass a PDB file with ATOM/HETATM records for exactly these atoms")
    return top


def topology_from_pdb_text(text: str):
    import tempfile

    import mdtraj as md

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "top.pdb")
        with open(path, "w") as fh:
            fh.write(text)
        return md.load_topology(path)


def topology_to_pdb_text(topology, xyz_nm) -> str | None:
    if topology is None:
        return None
    import tempfile

    import mdtraj as md

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "top.pdb")
        md.Trajectory(np.asarray(xyz_nm, dtype=np.float32)[None], topology).save_pdb(path)
        with open(path) as fh:
            return fh.read()
