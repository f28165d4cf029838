"""Reference data: generation with OpenMM, the HDF5 data-set format, loaders.

One entry point, :func:`load`, returns a :class:`Dataset` from

- a built-in name (``latentlab datasets`` lists them): the OpenMM sets shipped
  in ``latentlab/data/builtin/`` and the analytic systems ``three-atom``,
  ``double-well``, ``gaussian-mixture`` (exact samples, drawn on load);
- a latentlab HDF5 file (layout: :mod:`latentlab.data.store`);
- an mdtraj-readable trajectory (``topology=`` for formats without one) with
  forces from ``.npy``/``.npz`` (``forces=``);
- a ``.npy``/``.npz`` of positions (``masses=``/``topology=`` and
  ``temperature=`` required), or bare arrays via :meth:`Dataset.from_arrays`.

See :mod:`latentlab.data.generate` for how the built-in sets are made
(force fields, constraints and the constraint-free forces).
"""

from __future__ import annotations

import os

import numpy as np

from latentlab.data.dataset import Dataset, load_topology
from latentlab.validation import fail

BUILTIN_DIR = os.path.join(os.path.dirname(__file__), "builtin")

#: Built-in OpenMM data sets: name -> file in BUILTIN_DIR.
BUILTIN_FILES = {
    "alanine-dipeptide": "alanine-dipeptide.h5",
    "alanine-dipeptide-350K": "alanine-dipeptide-350K.h5",
    "alanine-dipeptide-400K": "alanine-dipeptide-400K.h5",
    "chignolin": "chignolin.h5",
}

#: Analytic systems: name -> (default number of exact samples, default map).
ANALYTIC = {
    "three-atom": (20000, "triangle:0,1,2"),
    "double-well": (20000, "linear:0"),
    "gaussian-mixture": (20000, "linear:0"),
}

_TRAJ_EXT = (".xtc", ".dcd", ".trr", ".nc", ".netcdf", ".pdb", ".h5", ".lh5", ".binpos", ".mdcrd", ".crd", ".xyz", ".gro",
             ".arc", ".lammpstrj", ".hdf5", ".dtr", ".gsd", ".xml", ".mol2", ".prmtop", ".rst7")


#: What DATA may be, for messages.
DATA_FIX = ("pass a built-in name (latentlab datasets), a latentlab .h5 data set, an mdtraj-readable trajectory "
            "(.xtc, .dcd, .pdb, ...) or positions as .npy/.npz")


def builtin_path(name: str) -> str:
    """Path of a built-in OpenMM data set (may not exist if not generated)."""
    return os.path.join(BUILTIN_DIR, BUILTIN_FILES[name])


def builtin_names() -> list[str]:
    """Names accepted by :func:`load` besides paths."""
    return list(BUILTIN_FILES) + list(ANALYTIC)


def resolve(source: str) -> str:
    """Resolve a DATA argument to a built-in name or an existing path.

    Returns the built-in name, or the path.  Raises FileNotFoundError naming
    the built-ins when it is neither.
    """
    source = str(source)
    if source in ANALYTIC:
        return source
    if source in BUILTIN_FILES:
        if not os.path.exists(builtin_path(source)):
            raise FileNotFoundError(
                f"data: the built-in data set '{source}' has not been generated in this installation "
                f"({builtin_path(source)} is missing). Fix: run latentlab/data/make_builtin.sh, or pass a file")
        return source
    if os.path.exists(source):
        return source
    raise FileNotFoundError(f"data: '{source}' is neither a file nor a built-in data set. "
                            f"Fix: pass an existing path or one of {', '.join(builtin_names())}")


def analytic_system(name: str, temperature: float | None = None):
    """The analytic system object for a built-in analytic name."""
    kwargs = {} if temperature is None else {"temperature": float(temperature)}
    if name == "three-atom":
        from latentlab.testing.three_atom import ThreeAtomSystem

        return ThreeAtomSystem(**kwargs)
    if name == "double-well":
        from latentlab.testing.double_well import DoubleWell2D

        return DoubleWell2D(**kwargs)
    if name == "gaussian-mixture":
        from latentlab.testing.gaussian_mixture import GaussianMixture2D

        return GaussianMixture2D(**kwargs)
    fail("name", f"unknown analytic system {name!r}", f"use one of {', '.join(ANALYTIC)}")


def _load_analytic(name: str, n: int | None, seed: int, temperature: float | None) -> Dataset:
    system = analytic_system(name, temperature)
    n = ANALYTIC[name][0] if n is None else int(n)
    pos, frc = system.sample(n, seed=seed)
    if name == "three-atom":
        masses = np.asarray(system.masses, dtype=np.float64)
        energies = system.energy(pos).detach().numpy()
    else:
        masses = np.array([system.mass])
        energies = system.energy(pos).numpy()
    return Dataset.from_arrays(pos.detach().numpy(), frc.detach().numpy(), masses=masses, temperature=system.temperature,
                               energies=energies, check_units=False, name=name, default_map=ANALYTIC[name][1],
                               metadata={"system": name, "exact_samples": True, "seed": seed}, source=name)


def load(source, *, topology=None, forces=None, energies=None, masses=None, temperature=None,
         length_unit: str = "nm", energy_unit: str = "kJ/mol", drop_nonfinite: bool = False, block: str = "primary",
         n: int | None = None, seed: int = 0, time=None, force_unit: str | None = None,
         dt: float | None = None, lazy: bool = False) -> Dataset:
    """Load a data set from a built-in name, a latentlab HDF5 file, a trajectory or arrays.

    Files are recognised by their content (:func:`latentlab.data.sniff.file_kind`), not their
    extension: a file of the wrong kind (empty, truncated, text, a model or SIM file) is refused
    with a message that says what it is.

    Parameters
    ----------
    source : str or Dataset
        Built-in name, path (``.h5`` latentlab file, mdtraj trajectory, or ``.npy``/``.npz`` positions).
    topology : str or mdtraj.Topology, optional
        For trajectories without one and for ``.npy`` positions.
    forces, energies : path (``.npy``/``.npz``) or array, optional
        In ``energy_unit`` per ``length_unit`` (or ``force_unit``) and ``energy_unit``.
    masses : array, shape=(n_atoms,), amu, optional (default: from the topology)
    temperature : float, K
        Required for trajectories and arrays; for analytic systems it changes the system's temperature.
    length_unit, energy_unit : str
        Units of array inputs ("nm"/"angstrom", "kJ/mol"/"kcal/mol"); mdtraj converts trajectories to nm itself.
    drop_nonfinite : bool
        Drop NaN/inf frames instead of refusing them.
    block : {"primary", "allatom"}
        For latentlab files with an all-atom block (chignolin).
    lazy : bool
        For latentlab HDF5 files: read positions and forces on demand (data sets larger than memory;
        :mod:`latentlab.data.lazy`).
    n, seed : int
        Number of exact samples and seed for the analytic systems.
    time : path or array, shape=(n_frames,), ps, optional
        Time of each frame (arrays and trajectories; default: an ``.npz``'s ``time`` or the trajectory's own).
    force_unit : str, optional
        ``ENERGY/LENGTH`` of the forces when it differs from ``energy_unit/length_unit``.
    dt : float, ps, optional
        Time between frames of arrays and trajectories (instead of ``time``).
    """
    if isinstance(source, Dataset):
        return source
    name = resolve(source)
    if name in ANALYTIC:
        return _load_analytic(name, n, seed, temperature)
    if name in BUILTIN_FILES:
        return Dataset.from_h5(builtin_path(name), block=block, drop_nonfinite=drop_nonfinite, lazy=lazy)
    from latentlab.data.dataset import _load_array
    from latentlab.data.sniff import check_kind, file_kind

    path = name
    ext = os.path.splitext(path)[1].lower()
    kind = file_kind(path)
    if isinstance(time, (str, os.PathLike)):
        time = _load_array(time, "time")
    if kind == "latentlab-data":
        return Dataset.from_h5(path, block=block, drop_nonfinite=drop_nonfinite, lazy=lazy)
    if kind in ("npy", "npz"):
        pos = _load_array(path, "positions")
        if isinstance(forces, (str, os.PathLike)):
            forces = _load_array(forces, "forces")
        if kind == "npz":
            with np.load(path) as z:
                forces = z["forces"] if forces is None and "forces" in z.files else forces
                energies = z["energies"] if energies is None and "energies" in z.files else energies
                masses = z["masses"] if masses is None and "masses" in z.files else masses
                time = z["time"] if time is None and dt is None and "time" in z.files else time
        if isinstance(energies, (str, os.PathLike)):
            energies = _load_array(energies, "energies")
        top = load_topology(str(topology)) if isinstance(topology, (str, os.PathLike)) else topology
        return Dataset.from_arrays(pos, forces, masses=masses, temperature=temperature, energies=energies, topology=top,
                                   length_unit=length_unit, energy_unit=energy_unit, drop_nonfinite=drop_nonfinite,
                                   name=os.path.splitext(os.path.basename(path))[0], source=os.path.abspath(path),
                                   time=time, force_unit=force_unit, dt=dt)
    trajectory = kind in ("dcd", "xtc", "trr", "netcdf", "pdb", "mdtraj-hdf5") or (
        kind in ("text", "unknown", "gzip") and ext in _TRAJ_EXT and ext not in (".h5", ".hdf5"))
    if trajectory:
        return Dataset.from_trajectory(path, topology, forces, temperature=temperature, masses=masses, energies=energies,
                                       length_unit=length_unit, energy_unit=energy_unit, drop_nonfinite=drop_nonfinite,
                                       time=time, force_unit=force_unit, dt=dt)
    check_kind(path, (), "data", "a data set", fix=DATA_FIX)


def list_datasets() -> list[dict]:
    """Entries for ``latentlab datasets --json``: built-in files that exist, then the analytic systems."""
    import h5py

    out = []
    for name, fname in BUILTIN_FILES.items():
        path = os.path.join(BUILTIN_DIR, fname)
        if not os.path.exists(path):
            continue
        with h5py.File(path, "r") as fh:
            n_frames, n_atoms = fh["positions"].shape[:2]
            entry = {"name": name, "frames": int(n_frames), "atoms": int(n_atoms),
                     "temperature": float(fh.attrs["temperature"]), "has_forces": "forces" in fh,
                     "default_map": str(fh.attrs.get("default_map", "")), "kind": "openmm",
                     "has_energies": "energies" in fh, "path": path}
            if "allatom" in fh:
                entry["allatom_frames"] = int(fh["allatom/positions"].shape[0])
                entry["allatom_atoms"] = int(fh["allatom/positions"].shape[1])
        out.append(entry)
    for name, (n, spec) in ANALYTIC.items():
        atoms = 3 if name == "three-atom" else 1
        out.append({"name": name, "frames": n, "atoms": atoms, "temperature": 300.0, "has_forces": True,
                    "default_map": spec, "kind": "analytic", "has_energies": True, "path": None})
    return out


__all__ = ["Dataset", "load", "resolve", "list_datasets", "builtin_names", "builtin_path", "analytic_system",
           "BUILTIN_FILES", "ANALYTIC"]
