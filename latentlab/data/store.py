"""The latentlab data-set file: one HDF5 file per data set.

Layout (format ``latentlab-dataset``, version 1)
------------------------------------------------
Root group = the *primary block* (what :func:`latentlab.data.load` returns)::

    positions        (n_frames, n_atoms, 3) float32   nm
    forces           (n_frames, n_atoms, 3) float32   kJ/mol/nm, F = -grad U   (optional)
    energies         (n_frames,)            float64   kJ/mol, potential energy (optional)
    time             (n_frames,)            float64   ps
    masses           (n_atoms,)             float64   amu (physical masses, never repartitioned)
    topology_pdb     scalar string                    PDB text of frame 0 (readable by mdtraj)  (optional)
    constraint_group (n_atoms,)             int32     atoms rigidly bound by constraints share a
                                                      group id (the index of the heaviest atom);
                                                      an unconstrained atom is its own group  (optional)
    weights          (n_frames,)            float64   statistical weight of each frame, e.g. importance
                                                      weights of flow samples; absent = all equal  (optional)
    replica          (n_frames,)            int32     id of the independent trajectory (replica) each frame
                                                      belongs to; frames of one replica are contiguous and
                                                      in time order; absent = one trajectory  (optional)

Root attributes: ``format`` (= "latentlab-dataset"), ``format_version`` (1),
``name``, ``temperature`` (K), ``default_map`` (a map spec string, may be ""),
``forces_aggregated`` (bool: the stored forces are already summed over each
atom's constraint group, i.e. constraint-free forces on rigid groups),
``units`` (JSON), and for generated data the provenance: ``forcefield``,
``solvent``, ``nonbonded_method``, ``integrator``, ``timestep_ps``,
``friction_per_ps``, ``constraints``, ``hydrogen_mass_amu`` (0 = no HMR),
``seed``, ``save_every_ps``, ``selection``, ``platform``, ``versions`` (JSON),
``command``; for imported data ``imported_from``, ``length_unit_in``,
``energy_unit_in``, ``force_unit_in``, ``topology_source`` (given, inferred
from masses and distances, or none) and ``force_check`` (the verdict of
:func:`latentlab.data.checks.check_forces`); ``dropped_frames`` (int) and
``dropped_frame_indices`` (JSON list of indices in the input) when frames with
NaN/inf were dropped (with a time axis they also leave gaps in ``time``).
An inferred topology is stored like any other (``topology_pdb``, with CONECT
records for its bonds; one residue ``UNK`` per molecule, atoms named element +
number).

Optional group ``allatom`` (only when the primary block is a subset of the
atoms, e.g. the CA-only chignolin set) holds the same datasets for all atoms
at a coarser stride (for 3-D reconstructions): ``allatom/positions``,
``allatom/forces`` (raw per-atom forces, *not* aggregated), ``allatom/energies``,
``allatom/time``, ``allatom/masses``, ``allatom/topology_pdb``,
``allatom/constraint_group`` and the attribute ``allatom.attrs["atom_indices"]``
(indices of the primary block's atoms in the all-atom topology).

Optional dataset ``resume_state_xml`` (scalar string): the serialized OpenMM
``State`` after the last frame, so ``latentlab generate ... --resume`` can
extend a finished file.

Files are written atomically: everything goes to a temporary file in the same
directory, which replaces ``path`` with ``os.replace`` only when complete.
Arrays are stored with the HDF5 shuffle filter + gzip (lossless).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

FORMAT = "latentlab-dataset"
FORMAT_VERSION = 1
UNITS = {"length": "nm", "time": "ps", "mass": "amu", "energy": "kJ/mol", "force": "kJ/mol/nm", "temperature": "K"}

_ARRAY_KEYS = ("positions", "forces", "energies", "time", "masses", "constraint_group", "weights", "replica")


def _write_block(group, block: dict) -> None:
    import h5py

    for key in _ARRAY_KEYS:
        value = block.get(key)
        if value is None:
            continue
        arr = np.asarray(value)
        if key in ("positions", "forces"):
            arr = arr.astype(np.float32)
        elif key in ("constraint_group", "replica"):
            arr = arr.astype(np.int32)
        else:
            arr = arr.astype(np.float64)
        kwargs = {}
        if arr.ndim >= 1 and arr.size > 64:
            chunk0 = max(1, min(arr.shape[0], (1 << 18) // max(1, arr[0].nbytes)))
            kwargs = dict(compression="gzip", compression_opts=4, shuffle=True, chunks=(chunk0,) + arr.shape[1:])
        group.create_dataset(key, data=arr, **kwargs)
    if block.get("topology_pdb"):
        group.create_dataset("topology_pdb", data=block["topology_pdb"], dtype=h5py.string_dtype())
    for key, value in (block.get("attrs") or {}).items():
        group.attrs[key] = value


def write_h5(path: str, primary: dict, attrs: dict, allatom: dict | None = None, resume_state_xml: str | None = None) -> None:
    """Write a data set file atomically.

    Parameters
    ----------
    path : str
        Destination; replaced only once the new file is complete.
    primary, allatom : dict
        Blocks with keys ``positions``, ``forces``, ``energies``, ``time``,
        ``masses``, ``topology_pdb``, ``constraint_group`` (see module docstring),
        optional ``attrs`` (dict of group attributes).
    attrs : dict
        Root attributes (``name``, ``temperature``, ``default_map``, provenance).
    """
    import h5py

    directory = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"out: directory {directory} does not exist. Fix: create it first or choose another --out")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".h5", dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file ordinary permissions
    try:
        with h5py.File(tmp, "w") as fh:
            fh.attrs["format"] = FORMAT
            fh.attrs["format_version"] = FORMAT_VERSION
            fh.attrs["units"] = json.dumps(UNITS)
            for key, value in attrs.items():
                if value is None:
                    continue
                fh.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
            _write_block(fh, primary)
            if allatom is not None:
                _write_block(fh.create_group("allatom"), allatom)
            if resume_state_xml:
                fh.create_dataset("resume_state_xml", data=resume_state_xml, dtype=h5py.string_dtype())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _read_block(group, skip=()) -> dict:
    out = {}
    for key in _ARRAY_KEYS:
        if key in group and key not in skip:
            out[key] = group[key][()]
    if "topology_pdb" in group:
        text = group["topology_pdb"][()]
        out["topology_pdb"] = text.decode() if isinstance(text, bytes) else str(text)
    out["attrs"] = {k: _attr(v) for k, v in group.attrs.items()}
    return out


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def is_latentlab_file(path: str) -> bool:
    """True if ``path`` is an HDF5 file in this format."""
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            return fh.attrs.get("format") in (FORMAT, FORMAT.encode())
    except (OSError, ValueError):
        return False


def read_h5(path: str, block: str = "primary", skip=()) -> dict:
    """Read a data set file into a dict of numpy arrays and attributes.

    ``block="primary"`` reads the root block, ``block="allatom"`` the all-atom
    block (if present).  The returned dict has the block keys plus ``attrs``
    (root attributes, merged with the block's) and ``has_allatom``.  ``skip``: arrays not to read
    (a lazy data set reads positions and forces on demand).
    """
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"data: {path} does not exist. Fix: check the path, or run `latentlab datasets` for built-in names")
    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"data: {path} could not be opened as HDF5 ({err}). Fix: pass a file written by latentlab generate/import") from None
    try:
        with fh:
            return _read_file(fh, path, block, skip)
    except (OSError, KeyError, RuntimeError) as err:  # data chunks missing or corrupt inside a file that opens
        raise ValueError(f"data: {path} is a damaged latentlab data set ({type(err).__name__}: {err}). "
                         "Fix: regenerate it (latentlab generate / latentlab import) or restore a good copy") from None


def _read_file(fh, path: str, block: str, skip=()) -> dict:
    if fh.attrs.get("format") not in (FORMAT, FORMAT.encode()):
        raise ValueError(f"data: {path} is HDF5 but not a latentlab data set (no format='{FORMAT}' attribute). "
                         "Fix: convert it with `latentlab import`")
    root_attrs = {k: _attr(v) for k, v in fh.attrs.items()}
    if block == "primary":
        out = _read_block(fh, skip)
    elif block == "allatom":
        if "allatom" not in fh:
            raise ValueError(f"data: {path} has no all-atom block. Fix: use the primary block (block='primary')")
        out = _read_block(fh["allatom"], skip)
    else:
        raise ValueError(f"block: got {block!r}. Fix: use 'primary' or 'allatom'")
    out["attrs"] = {**root_attrs, **out["attrs"]}
    out["has_allatom"] = "allatom" in fh
    if "resume_state_xml" in fh:
        text = fh["resume_state_xml"][()]
        out["resume_state_xml"] = text.decode() if isinstance(text, bytes) else str(text)
    return out
