"""What a file is, from its content: every reader asks here before it parses.

A file's extension says what the user meant; its first bytes say what it is.
:func:`file_kind` looks at the bytes (magic numbers, then the few fields that
tell latentlab's own formats apart) and :func:`check_kind` turns a wrong kind
into one clear error that names what the file is and what to do with it, so
that an empty, truncated or text ``.h5``, or a model file given where a data
set is expected, never reaches a parser that fails with an unrelated message.

Kinds
-----
``missing``, ``directory``, ``unreadable`` (no read permission), ``empty`` (0 bytes);
``latentlab-data`` (HDF5 with ``format = "latentlab-dataset"``), ``mdtraj-hdf5``
(mdtraj's HDF5 trajectory), ``hdf5`` (any other HDF5), ``hdf5-damaged`` (HDF5
signature but the file cannot be opened: truncated or corrupt);
``latentlab-model``, ``latentlab-checkpoint``, ``torch-zip`` (another PyTorch archive);
``latentlab-simulation`` (SIM ``.npz``), ``npz``, ``zip``, ``npy``, ``pickle``;
``png``, ``gzip``; trajectories ``dcd``, ``xtc``, ``trr``, ``netcdf``;
``pdb``, ``text`` and ``unknown`` (binary of no known kind).

Signatures
----------
HDF5 ``\\x89HDF\\r\\n\\x1a\\n`` at byte 0, 512, 1024, 2048, ... (HDF5 file format
specification, superblock); zip ``PK\\x03\\x04`` (PyTorch archives hold
``<name>/data.pkl``; ``.npz`` files hold ``<key>.npy`` members); NumPy ``.npy``
``\\x93NUMPY``; PNG ``\\x89PNG\\r\\n\\x1a\\n``; gzip ``\\x1f\\x8b``; pickle ``\\x80``
+ protocol byte; DCD: record length 84 then ``CORD``; XTC and TRR: big-endian
int32 1995 and 1993 (GROMACS); NetCDF classic ``CDF\\x01``/``CDF\\x02``.
"""

from __future__ import annotations

import os
import re
import struct
import zipfile

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
NPY_MAGIC = b"\x93NUMPY"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GZIP_MAGIC = b"\x1f\x8b"

#: Record names a PDB file starts with (wwPDB format 3.3).
_PDB_RECORDS = ("ATOM", "HETATM", "HEADER", "REMARK", "CRYST1", "MODEL", "TITLE", "COMPND", "SEQRES", "EXPDTA",
                "AUTHOR", "KEYWDS", "SOURCE", "ANISOU", "TER", "CONECT", "ORIGX", "SCALE")

#: One phrase per kind, for messages ("x.h5 is <phrase>").
DESCRIPTIONS = {
    "missing": "missing",
    "directory": "a directory",
    "unreadable": "not readable (permission denied)",
    "empty": "empty (0 bytes)",
    "latentlab-data": "a latentlab data set (HDF5)",
    "mdtraj-hdf5": "an mdtraj HDF5 trajectory",
    "hdf5": "an HDF5 file that is not a latentlab data set",
    "hdf5-damaged": "a damaged or truncated HDF5 file (it has the HDF5 signature but cannot be opened)",
    "latentlab-model": "a latentlab model file (a trained CG potential)",
    "latentlab-checkpoint": "a latentlab training checkpoint",
    "torch-zip": "a PyTorch archive (torch.save) that is not a latentlab model",
    "latentlab-simulation": "a latentlab simulation (SIM) file",
    "npz": "a NumPy .npz archive",
    "zip": "a zip archive",
    "npy": "a NumPy .npy array",
    "pickle": "a Python pickle",
    "png": "a PNG image",
    "gzip": "a gzip-compressed file",
    "dcd": "a DCD trajectory",
    "xtc": "an XTC trajectory",
    "trr": "a TRR trajectory",
    "netcdf": "a NetCDF (AMBER) trajectory",
    "pdb": "a PDB text file",
    "text": "a text file",
    "unknown": "a binary file of unknown kind",
}

#: Where a file of each kind belongs, for messages about a file given in the wrong place.
USES = {
    "latentlab-data": "a data set goes in the DATA argument (latentlab info/plot/train DATA)",
    "mdtraj-hdf5": "an mdtraj trajectory goes to latentlab import --positions (mdtraj reads this format with "
                   "PyTables: pip install tables)",
    "hdf5": "arrays from another HDF5 file go to latentlab import as .npy/.npz (--positions, --forces)",
    "hdf5-damaged": "regenerate it (latentlab generate / latentlab import) or restore a good copy",
    "latentlab-model": "a model file goes to latentlab simulate MODEL or latentlab info MODEL",
    "latentlab-checkpoint": "a checkpoint resumes the training that wrote it (latentlab train ... --resume)",
    "latentlab-simulation": "a SIM file goes to latentlab compare or latentlab info SIM",
    "npz": "arrays go to latentlab import (--positions, --forces, --energies, --time)",
    "npy": "arrays go to latentlab import (--positions, --forces, --energies, --time)",
    "empty": "it was probably left by an interrupted write: regenerate it or pass another file",
    "dcd": "a trajectory goes to latentlab import --positions FILE --topology TOP.pdb",
    "xtc": "a trajectory goes to latentlab import --positions FILE --topology TOP.pdb",
    "trr": "a trajectory goes to latentlab import --positions FILE --topology TOP.pdb",
    "netcdf": "a trajectory goes to latentlab import --positions FILE --topology TOP.pdb",
    "pdb": "a PDB file goes to --topology, or to latentlab import --positions",
}


def _hdf5_offset(fh, size: int) -> int | None:
    """Offset of the HDF5 superblock signature (0, 512, 1024, ...), or None."""
    offset = 0
    while offset + 8 <= size and offset <= (1 << 20):
        fh.seek(offset)
        if fh.read(8) == HDF5_MAGIC:
            return offset
        offset = 512 if offset == 0 else 2 * offset
    return None


def _hdf5_kind(path: str) -> str:
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            fmt = fh.attrs.get("format")
            fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
            if fmt == "latentlab-dataset":
                return "latentlab-data"
            conventions = fh.attrs.get("conventions")
            conventions = conventions.decode() if isinstance(conventions, bytes) else str(conventions or "")
            if "Pande" in conventions or ("coordinates" in fh and "topology" in fh):
                return "mdtraj-hdf5"
            return "hdf5"
    except Exception:  # h5py raises OSError/ValueError/KeyError for broken files
        return "hdf5-damaged"


def _zip_kind(path: str) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if pkl:
                head = z.read(pkl[0])[:1 << 16]
                # the first latentlab format string in the pickle is the top-level "format" value
                found = re.search(rb"latentlab-(model|checkpoint)", head)
                return f"latentlab-{found.group(1).decode()}" if found else "torch-zip"
            if names and all(n.endswith(".npy") for n in names):
                if "metadata.npy" in names and "Q.npy" in names:
                    return "latentlab-simulation"
                return "npz"
            return "zip"
    except (zipfile.BadZipFile, OSError, EOFError, KeyError):
        return "zip"


def _text_kind(head: bytes) -> str | None:
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        if len(head) >= 4096:  # the last character may be cut
            try:
                text = head[:-4].decode("utf-8")
            except UnicodeDecodeError:
                return None
        else:
            return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    if text and printable < 0.95 * len(text):
        return None
    for line in text.splitlines()[:50]:
        if re.match(r"^(%s)\b" % "|".join(_PDB_RECORDS), line):
            return "pdb"
    return "text"


def file_kind(path) -> str:
    """The kind of the file at ``path``, from its content (see the module docstring for the kinds).

    Reads at most a few kilobytes (plus the HDF5 root attributes or a zip's
    directory); never raises for a bad file.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    str
        One of the keys of :data:`DESCRIPTIONS`.
    """
    path = os.fspath(path)
    if not os.path.lexists(path) or not os.path.exists(path):
        return "missing"
    if os.path.isdir(path):
        return "directory"
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(4096)
            if size == 0:
                return "empty"
            hdf5_at = _hdf5_offset(fh, size)
    except PermissionError:
        return "unreadable"
    except OSError:
        return "unreadable"
    if hdf5_at is not None:
        return _hdf5_kind(path)
    if head.startswith(ZIP_MAGIC) or head.startswith(EMPTY_ZIP_MAGIC):
        return _zip_kind(path)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if len(head) >= 8 and head[4:8] == b"CORD":
        return "dcd"
    if head[:4] in (b"CDF\x01", b"CDF\x02"):
        return "netcdf"
    if len(head) >= 4:
        magic = struct.unpack(">i", head[:4])[0]
        if magic == 1995:
            return "xtc"
        if magic == 1993:
            return "trr"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    text = _text_kind(head)
    return text if text is not None else "unknown"


def describe(kind: str) -> str:
    """A phrase for ``kind`` ("a latentlab model file (a trained CG potential)")."""
    return DESCRIPTIONS.get(kind, kind)


def check_kind(path, expected, argument: str, wanted: str, fix: str | None = None) -> str:
    """Return ``file_kind(path)`` if it is one of ``expected``; otherwise fail naming what the file is.

    Parameters
    ----------
    path : str
    expected : str or collection of str
        Acceptable kinds.
    argument : str
        The argument the path came from, for the message (e.g. ``"data"``, ``"--forces"``).
    wanted : str
        What was expected, in words ("a data set", "a .npy/.npz array").
    fix : str, optional
        What to pass instead (default: "pass ``wanted``"); where the given file belongs follows it.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    ValueError
        ``"argument: PATH is <what it is>, not <wanted>. Fix: <fix>; <where such a file belongs>"``.
    """
    path = os.fspath(path)
    expected = {expected} if isinstance(expected, str) else set(expected)
    kind = file_kind(path)
    if kind in expected:
        return kind
    if kind == "missing":
        raise FileNotFoundError(f"{argument}: {path} does not exist. Fix: check the path")
    from latentlab.validation import fail

    if kind == "directory":
        fail(argument, f"{path} is a directory, not {wanted}", fix or f"pass {wanted}, not a folder")
    if kind == "unreadable":
        fail(argument, f"{path} is not readable (permission denied)", "fix the file's permissions (chmod u+r) or copy it")
    use = USES.get(kind)
    if kind in ("empty", "hdf5-damaged"):
        fix_text = use
    else:
        fix_text = fix or f"pass {wanted}"
        if use:
            fix_text += f"; {use}"
    fail(argument, f"{path} is {describe(kind)}, not {wanted}", fix_text)
    return kind  # unreachable


__all__ = ["file_kind", "describe", "check_kind", "DESCRIPTIONS", "USES"]
