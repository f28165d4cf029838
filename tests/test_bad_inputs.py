"""Catalogue of bad inputs: every row runs the real ``latentlab`` command line in its own process.

Each row (a :class:`Case`) is a command with one thing wrong.  For every row
the test asserts what a user must get (issue 10):

* exit code 2;
* ONE message on stderr, ``latentlab CMD: error: <argument>: <problem>. Fix: <fix>``,
  that matches the row's pattern (it names the problem) and has a fix;
* no ``Traceback``;
* every file that was there before is byte-for-byte unchanged (same mode too),
  and no file was added (hash of the whole working directory before and after).

Every row runs in a fresh directory holding copies of all the fixture files
(:func:`make_fixtures`), with that directory as the working directory, so a
command that wrote onto any input, or left a partial file, is caught.

Speed: a driver process imports latentlab once and forks one child per row
(a real, separate process each: its own exit code, stdout and stderr, an
uncaught exception prints a real traceback); the whole table takes a few
seconds of work plus one interpreter start.  ``LATENTLAB_BAD_INPUTS_SPAWN=1``
runs every row as ``python -m latentlab.cli ...`` instead (slow, ~2-3 s a row).

Adding rows: append ``Case(id, argv, match)`` to :data:`CASES` (``argv`` after
``latentlab``; paths relative to the row's directory, which holds the files
that :func:`make_fixtures` writes).  ``needs`` skips a row when a condition fails (e.g. a
built-in data set that is not generated).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTDATA = os.path.join(ROOT, "tests", "data")


@dataclass(frozen=True)
class Case:
    """One bad input: ``latentlab *argv`` must fail with exit code 2 and a message matching ``match``."""

    id: str
    argv: tuple
    match: str
    needs: tuple = field(default_factory=tuple)  # names of conditions in NEEDS that must hold


def case(id: str, argv: str | list, match: str, needs=()) -> Case:
    """A row; ``argv`` may be a string split on spaces (use a list for arguments with spaces or empty ones)."""
    return Case(id, tuple(argv.split() if isinstance(argv, str) else argv), match, tuple(needs))


# ---------------------------------------------------------------------------- fixture files
# Bare arrays of the analytic three-atom system (exact Boltzmann samples, 300 K, masses 12, 14, 16):
# positions in Angstrom, forces in kcal/mol/Angstrom (the correct import is
# --length-unit angstrom --energy-unit kcal/mol --masses 12,14,16 --temperature 300).
IMPORT = "import --positions pos.npy --masses 12,14,16 --temperature 300 --length-unit angstrom"
IMPORT_F = IMPORT + " --forces frc.npy --energy-unit kcal/mol"


def make_fixtures(folder: str) -> None:
    """Write every fixture file into ``folder``."""
    import mdtraj as md

    from latentlab.data import Dataset, load
    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    ds = load("three-atom", n=600, seed=3)
    x_a, f_kcal_a = 10.0 * ds.positions, ds.forces / 41.84

    def save(name, arr):
        with open(os.path.join(folder, name), "wb") as fh:
            np.save(fh, np.asarray(arr))

    save("pos.npy", x_a)
    save("frc.npy", f_kcal_a)
    save("frc_kj_nm.npy", ds.forces)  # kJ/mol/nm numbers
    save("frc_kj_a.npy", ds.forces / 10.0)  # kJ/mol/Angstrom numbers
    save("frc_grad.npy", -f_kcal_a)  # gradients, not forces
    save("frc_short.npy", f_kcal_a[:-10])
    save("frc_4atoms.npy", np.concatenate([f_kcal_a, f_kcal_a[:, :1]], axis=1))
    save("pos_nm.npy", ds.positions)
    pos_nan = x_a.copy()
    pos_nan[[7, 300]] = np.nan
    save("pos_nan.npy", pos_nan)
    save("pos_allnan.npy", np.full_like(x_a, np.nan))
    save("pos_1frame.npy", x_a[0])
    save("pos_flat.npy", x_a.reshape(len(x_a), -1))
    save("time_short.npy", np.arange(10.0))
    Dataset.from_arrays(ds.positions, ds.forces, masses=ds.masses, temperature=300.0, check_units=False, name="data",
                        default_map="triangle:0,1,2").save(os.path.join(folder, "data.h5"))
    Dataset.from_arrays(ds.positions, None, masses=ds.masses, temperature=300.0, check_units=False, name="nf",
                        default_map="triangle:0,1,2").save(os.path.join(folder, "nf.h5"))
    shutil.copy(os.path.join(folder, "data.h5"), os.path.join(folder, "existing.h5"))
    raw = open(os.path.join(folder, "data.h5"), "rb").read()
    with open(os.path.join(folder, "truncated.h5"), "wb") as fh:
        fh.write(raw[: len(raw) // 3])
    open(os.path.join(folder, "empty.h5"), "wb").close()
    open(os.path.join(folder, "empty.npy"), "wb").close()
    with open(os.path.join(folder, "text.h5"), "w") as fh:
        fh.write("positions forces\n0.1 0.2 0.3\n")
    import h5py

    with h5py.File(os.path.join(folder, "other.h5"), "w") as fh:
        fh["coordinates"] = np.zeros((2, 3, 3))
    shutil.copy(os.path.join(TESTDATA, "model-0.1.0-three-atom.pt"), os.path.join(folder, "model.pt"))
    shutil.copy(os.path.join(TESTDATA, "model-0.1.0-three-atom.pt"), os.path.join(folder, "model.h5"))
    shutil.copy(os.path.join(TESTDATA, "sim-0.1.0-three-atom.npz"), os.path.join(folder, "sim.npz"))
    sim = open(os.path.join(TESTDATA, "sim-0.1.0-three-atom.npz"), "rb").read()
    with open(os.path.join(folder, "truncated.npz"), "wb") as fh:
        fh.write(sim[:700])
    with open(os.path.join(folder, "image.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with open(os.path.join(folder, "existing.png"), "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n precious")
    shutil.copy(ALANINE_DIPEPTIDE_PDB, os.path.join(folder, "ala.pdb"))
    md.load(ALANINE_DIPEPTIDE_PDB).save_dcd(os.path.join(folder, "ala.dcd"))
    with open(os.path.join(folder, "user.pt"), "w") as fh:
        fh.write("precious\n")
    os.mkdir(os.path.join(folder, "folder"))
    with open(os.path.join(folder, "folder", "keep.txt"), "w") as fh:
        fh.write("inside a folder\n")


NEEDS = {
    "not-root": lambda: hasattr(os, "geteuid") and os.geteuid() != 0,  # root reads files without permission
    "no-cuda": lambda: not __import__("torch").cuda.is_available(),
}

# ---------------------------------------------------------------------------- the catalogue
CASES = [
    # --- DATA of info / plot / consistency / train: files of the wrong kind, named by their content
    case("info-empty-h5", "info empty.h5", r"empty.h5 is empty \(0 bytes\), not a data set"),
    case("info-truncated-h5", "info truncated.h5", r"truncated.h5 is a damaged or truncated HDF5 file"),
    case("info-text-h5", "info text.h5", r"text.h5 is a text file, not a data set"),
    case("info-foreign-hdf5", "info other.h5", r"other.h5 is an HDF5 file that is not a latentlab data set"),
    case("info-directory", "info folder", r"folder is a directory, not a data set"),
    case("info-missing-file", "info missing.h5", r"'missing.h5' is neither a file nor a built-in data set"),
    case("info-unknown-name", "info alanine-dipeptid", r"neither a file nor a built-in.*alanine-dipeptide"),
    case("info-png", "info image.png", r"image.png is a PNG image, not a data set"),
    case("info-truncated-npz", "info truncated.npz", r"truncated.npz is a zip archive, not a data set"),
    case("info-npy-without-temperature", "info pos.npy", r"temperature: is required"),
    case("info-dcd-without-topology", "info ala.dcd --temperature 300", r"ala.dcd is a DCD trajectory, which stores "
         r"coordinates but no atoms. Fix: pass --topology"),
    case("info-topology-is-a-model", "info ala.dcd --topology model.pt --temperature 300",
         r"topology: model.pt is a latentlab model file .*, not a topology"),
    case("info-bad-temperature", "info ala.dcd --topology ala.pdb --temperature -5", r"--temperature: got -5"),
    case("info-dataset-with-temperature", "info data.h5 --temperature 350",
         r"--temperature: data.h5 is a data set sampled at 300 K"),
    case("plot-dataset-with-topology", "plot data.h5 --topology ala.pdb --out fes.png",
         r"--topology: data.h5 is a data set with its own topology"),
    case("info-unreadable", "info locked.h5", r"locked.h5 is not readable \(permission denied\)", needs=["not-root"]),
    case("plot-model-as-data", "plot model.pt --out fes.png", r"model.pt is a latentlab model file .*latentlab simulate"),
    case("plot-model-named-h5", "plot model.h5 --out fes.png", r"model.h5 is a latentlab model file"),
    case("plot-sim-as-data", "plot sim.npz --out fes.png", r"sim.npz is a latentlab simulation \(SIM\) file"),
    case("consistency-empty", "consistency empty.h5", r"empty.h5 is empty"),
    case("train-empty-data", "train empty.h5 --out m.pt", r"empty.h5 is empty"),
    case("train-model-as-data", "train model.pt --out m.pt", r"model.pt is a latentlab model file"),
    case("train-sim-as-data", "train sim.npz --out m.pt", r"sim.npz is a latentlab simulation"),
    case("train-truncated-data", "train truncated.h5 --out m.pt", r"damaged or truncated HDF5"),
    # --- maps
    case("plot-empty-map", ["plot", "data.h5", "--map", "", "--out", "fes.png"], r"--map: is empty"),
    case("plot-unknown-map-kind", "plot data.h5 --map banana:1 --out fes.png", r"unknown map kind 'banana'"),
    case("plot-map-index-out-of-range", "plot data.h5 --map distances:0-9 --out fes.png", r"out of range"),
    case("plot-selection-without-topology", ["plot", "data.h5", "--map", "linear:name CA", "--out", "fes.png"],
         r"atom selection but this data set has no topology"),
    case("plot-phi-psi-without-topology", "plot data.h5 --map dihedrals:phi-psi --out fes.png", r"needs a topology"),
    case("consistency-empty-map", ["consistency", "data.h5", "--map", " "], r"--map: is empty"),
    case("consistency-rank-deficient-map", "consistency data.h5 --map distances:0-1,1-0", r"rank-deficient"),
    case("consistency-bad-frames", "consistency data.h5 --frames 0", r"--frames: got 0"),
    case("consistency-bad-step", "consistency data.h5 --step -0.1", r"--step: got -0.1"),
    case("plot-bad-bins", "plot data.h5 --bins 1 --out fes.png", r"--bins: got 1"),
    # --- outputs: never overwrite, never onto an input, directory checked first
    case("plot-existing-out", "plot data.h5 --out existing.png", r"existing.png already exists.*--overwrite"),
    case("plot-out-is-input", "plot data.h5 --out data.h5 --overwrite", r"data.h5 is also an input"),
    case("plot-out-missing-dir", "plot data.h5 --out nodir/fes.png", r"nodir does not exist"),
    case("plot-out-is-directory", "plot data.h5 --out folder", r"'folder' is a directory, not a file name"),
    case("consistency-plot-exists", "consistency data.h5 --plot existing.png", r"existing.png already exists"),
    case("import-existing-out", IMPORT_F + " --out existing", r"existing.h5 already exists.*--overwrite"),
    case("import-out-is-input", IMPORT_F + " --out frc.npy --overwrite", r"frc.npy is also an input"),
    case("import-out-missing-dir", IMPORT_F + " --out nodir/x", r"nodir does not exist"),
    # --- import: inputs of the wrong kind or shape
    case("import-missing-positions", "import --positions nope.npy --temperature 300 --out x", r"nope.npy does not exist"),
    case("import-empty-positions", "import --positions empty.npy --masses 1 --temperature 300 --out x",
         r"empty.npy is empty"),
    case("import-directory-as-positions", "import --positions folder --masses 1 --temperature 300 --out x",
         r"--positions: folder is a directory, not positions"),
    case("import-model-as-positions", "import --positions model.pt --masses 1 --temperature 300 --out x",
         r"--positions: model.pt is a latentlab model file"),
    case("import-text-as-positions", "import --positions text.h5 --masses 1 --temperature 300 --out x",
         r"text.h5 is a text file"),
    case("import-forces-is-model", IMPORT + " --forces model.pt --out x",
         r"forces: model.pt is a latentlab model file .*, not a NumPy .npy/.npz array"),
    case("import-forces-fewer-frames", IMPORT_F.replace("frc.npy", "frc_short.npy") + " --out x",
         r"forces: has 590 frames but positions has 600"),
    case("import-forces-more-atoms", IMPORT_F.replace("frc.npy", "frc_4atoms.npy") + " --out x",
         r"forces: has 4 atoms but positions have 3"),
    case("import-single-frame", IMPORT.replace("pos.npy", "pos_1frame.npy") + " --out x", r"a single frame"),
    case("import-flat-positions", IMPORT.replace("pos.npy", "pos_flat.npy") + " --out x",
         r"expected \(n_frames, n_atoms, 3\)"),
    case("import-nan-frames", IMPORT_F.replace("pos.npy", "pos_nan.npy") + " --out x",
         r"2 frame\(s\) contain NaN or inf \(frame indices 7, 300\).*--drop-nonfinite"),
    case("import-all-nan", IMPORT_F.replace("pos.npy", "pos_allnan.npy") + " --drop-nonfinite --out x",
         r"every frame contains NaN"),
    case("import-nm-declared-angstrom", IMPORT.replace("pos.npy", "pos_nm.npy") + " --out x", r"look like nm"),
    case("import-angstrom-declared-nm", "import --positions pos.npy --masses 12,14,16 --temperature 300 --out x",
         r"look like Angstrom"),
    case("import-masses-count", IMPORT_F.replace("12,14,16", "12,14") + " --out x", r"2 entries but the system has 3"),
    case("import-masses-negative", IMPORT_F.replace("12,14,16", "12,-14,16") + " --out x", r"non-positive"),
    case("import-masses-text", IMPORT_F.replace("12,14,16", "C,N,O") + " --out x", r"could not parse"),
    case("import-masses-missing", "import --positions pos.npy --temperature 300 --length-unit angstrom --out x",
         r"masses: are required without a topology"),
    case("import-topology-wrong-atoms", IMPORT_F + " --topology ala.pdb --out x", r"topology: has 22 atoms but positions have 3"),
    case("import-topology-is-dcd", IMPORT_F + " --topology ala.dcd --out x", r"ala.dcd is a DCD trajectory, not a topology"),
    case("import-time-length", IMPORT_F + " --time time_short.npy --out x", r"time: has 10 entries but positions has 600"),
    case("import-dt-negative", IMPORT_F + " --dt -2 --out x", r"dt: got -2"),
    case("import-temperature-zero", IMPORT_F.replace("300", "0") + " --out x", r"temperature: got 0"),
    case("import-temperature-nan", IMPORT_F.replace("300", "nan") + " --out x", r"temperature: got nan"),
    # --- import: silent unit mistakes of issue 10, caught by the force check
    case("import-kcal-forces-declared-kj", IMPORT_F.replace("kcal/mol", "kJ/mol") + " --out x",
         r"4.184x too small for kJ/mol/angstrom; they fit the positions if they were in kcal/mol/angstrom.*--no-check"),
    case("import-per-nm-forces-declared-angstrom",
         IMPORT_F.replace("frc.npy", "frc_kj_nm.npy").replace("kcal/mol", "kJ/mol") + " --out x",
         r"10x too large for kJ/mol/angstrom; they fit the positions if they were in kJ/mol/nm.*--force-unit kJ/mol/nm"),
    case("import-kj-forces-declared-kcal", IMPORT_F.replace("frc.npy", "frc_kj_a.npy") + " --out x",
         r"4.184x too large for kcal/mol/angstrom; they fit the positions if they were in kJ/mol/angstrom"),
    case("import-gradients-as-forces", IMPORT_F.replace("frc.npy", "frc_grad.npy") + " --out x", r"point uphill"),
    case("import-wrong-temperature", IMPORT_F.replace("300", "450") + " --out x",
         r"consistent with a temperature of about \d+ K, not the stated 450 K"),
    # --- import: maps validated by building them
    case("import-empty-default-map", IMPORT_F.split() + ["--default-map", "", "--out", "x"], r"--default-map: is empty"),
    case("import-unknown-default-map", IMPORT_F + " --default-map banana:1 --out x", r"--default-map: 'banana:1' cannot "
         r"be built on this data set: spec: unknown map kind 'banana'"),
    case("import-default-map-out-of-range", IMPORT_F + " --default-map distances:0-5 --out x", r"out of range"),
    # --- train: outputs and settings, all checked before any work
    case("train-out-is-its-input", "train data.h5 --epochs 2 --out data.h5 --overwrite", r"data.h5 is also an input"),
    case("train-existing-user-file", "train data.h5 --epochs 2 --out user.pt", r"user.pt already exists.*--overwrite"),
    case("train-existing-model", "train data.h5 --epochs 2 --out model", r"model.pt already exists"),
    case("train-out-missing-dir", "train data.h5 --epochs 2 --out nodir/m.pt", r"nodir does not exist"),
    case("train-out-is-directory", "train data.h5 --epochs 2 --out folder", r"'folder' is a directory"),
    case("train-zero-epochs", "train data.h5 --epochs 0 --out m", r"epochs: got 0"),
    case("train-bad-hidden", "train data.h5 --hidden 32,x --out m", r"--hidden: got '32,x'"),
    case("train-holdout-too-large", "train data.h5 --holdout 1.5 --out m", r"holdout: got 1.5"),
    case("train-empty-map", ["train", "data.h5", "--map", "", "--out", "m"], r"--map: is empty"),
    case("train-no-forces-force-matching", "train nf.h5 --out m", r"has no forces.*relative-entropy"),
    case("train-temperature-matching-alone", "train data.h5 --objective temperature-matching --out m",
         r"--more-data: temperature matching needs data at two or more temperatures"),
    case("train-cuda-absent", "train data.h5 --device cuda --out m", r"CUDA was asked for", needs=["no-cuda"]),
    # --- simulate
    case("simulate-missing-model", "simulate nope.pt --walkers 4 --steps 10 --out s", r"nope.pt does not exist"),
    case("simulate-data-as-model", "simulate data.h5 --walkers 4 --steps 10 --out s",
         r"data.h5 is a latentlab data set .*, not a latentlab model file"),
    case("simulate-sim-as-model", "simulate sim.npz --walkers 4 --steps 10 --out s", r"sim.npz is a latentlab simulation"),
    case("simulate-onto-the-model", "simulate model.pt --walkers 4 --steps 10 --out model.pt --overwrite",
         r"model.pt is also an input"),
    case("simulate-existing-out", "simulate model.pt --walkers 4 --steps 10 --out sim.npz", r"sim.npz already exists"),
    case("simulate-out-missing-dir", "simulate model.pt --walkers 4 --steps 10 --out nodir/s", r"nodir does not exist"),
    case("simulate-zero-walkers", "simulate model.pt --walkers 0 --steps 10 --out s", r"--walkers: got 0"),
    case("simulate-negative-dt", "simulate model.pt --walkers 4 --steps 10 --dt -0.001 --out s", r"--dt: got -0.001"),
    case("simulate-bad-gamma", "simulate model.pt --walkers 4 --steps 10 --gamma fast --out s", r"--gamma: got 'fast'"),
    case("simulate-bad-temperature", "simulate model.pt --walkers 4 --steps 10 --temperature -3 --out s",
         r"temperature: got -3"),
    # --- compare
    case("compare-missing-sim", "compare nope.npz --reference data.h5", r"nope.npz does not exist"),
    case("compare-model-as-sim", "compare model.pt --reference data.h5", r"model.pt is a latentlab model file"),
    case("compare-existing-plot", "compare sim.npz --reference data.h5 --plot existing.png", r"existing.png already exists"),
    case("compare-plot-onto-sim", "compare sim.npz --reference data.h5 --plot sim.npz --overwrite", r"sim.npz is also an input"),
    case("compare-bad-burn-in", "compare sim.npz --reference data.h5 --burn-in 1.5", r"--burn-in: got 1.5"),
    case("compare-holdout-without-one", "compare sim.npz --reference data.h5 --against holdout", r"no hold-out recorded"),
    case("compare-other-map", "compare sim.npz --reference alanine-dipeptide --map dihedrals:phi-psi",
         r"has 2 coordinates but SIM has 3"),
    # --- serve and demo
    case("serve-bad-port", "serve --port 70000", r"--port: got 70000"),
    case("serve-text-as-data", "serve --data text.h5", r"text.h5 is a text file"),
    case("demo-one-walker", "demo three-atom --walkers 1", r"--walkers: got 1"),
]


# ---------------------------------------------------------------------------- running
_DRIVER = r"""
import io, json, os, sys, time, traceback
os.environ.setdefault("MPLBACKEND", "Agg")
import numpy, h5py, torch, mdtraj, scipy.spatial, matplotlib  # imported once; every row forks from here
matplotlib.use("Agg")
import matplotlib.pyplot
torch.set_num_threads(1)
import latentlab.cli
from latentlab.cli import main
import latentlab.consistency, latentlab.data, latentlab.data.bonds, latentlab.data.checks, latentlab.forces, latentlab.io
import latentlab.maps
rows = json.load(sys.stdin)
for row in rows:
    t0 = time.perf_counter()
    out_path, err_path = row["stdout"], row["stderr"]
    pid = os.fork()
    if pid == 0:
        rc = 1
        try:
            os.chdir(row["cwd"])
            for fd, path in ((1, out_path), (2, err_path)):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(f, fd)
                os.close(f)
            try:
                rc = main(row["argv"])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                traceback.print_exc()
                rc = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(int(rc or 0))
    deadline = time.time() + row["timeout"]
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.time() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            status = -9
            break
        time.sleep(0.005)
    rc = os.waitstatus_to_exitcode(status) if status != -9 else -9
    print(json.dumps({"id": row["id"], "rc": rc, "seconds": time.perf_counter() - t0}), flush=True)
"""


def _snapshot(folder: str) -> dict:
    """``{relative path: (kind, mode, sha256)}`` of everything under ``folder``."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, folder)
            if os.path.isdir(path):
                out[rel] = ("dir", st.st_mode, "")
            else:
                with open(path, "rb") as fh:
                    out[rel] = ("file", st.st_mode, hashlib.sha256(fh.read()).hexdigest())
    return out


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cases(cases, workdir: str, timeout: float = 120.0) -> dict:
    """Run every case in its own copy of the fixtures; returns ``{id: result dict}``."""
    fixtures = os.path.join(workdir, "_fixtures")
    os.makedirs(fixtures)
    make_fixtures(fixtures)
    rows, results = [], {}
    for c in cases:
        cwd = os.path.join(workdir, c.id)
        shutil.copytree(fixtures, cwd)
        if c.id == "info-unreadable":
            shutil.copy(os.path.join(cwd, "data.h5"), os.path.join(cwd, "locked.h5"))
            os.chmod(os.path.join(cwd, "locked.h5"), 0)
        logs = os.path.join(workdir, "_logs", c.id)
        os.makedirs(logs)
        rows.append({"id": c.id, "argv": list(c.argv), "cwd": cwd, "timeout": timeout,
                     "stdout": os.path.join(logs, "stdout"), "stderr": os.path.join(logs, "stderr")})
        results[c.id] = {"before": _snapshot(cwd)}
    if os.environ.get("LATENTLAB_BAD_INPUTS_SPAWN") == "1" or not hasattr(os, "fork"):
        for row in rows:
            with open(row["stdout"], "w") as out, open(row["stderr"], "w") as err:
                proc = subprocess.run([sys.executable, "-m", "latentlab.cli", *row["argv"]], cwd=row["cwd"], stdout=out,
                                      stderr=err, env=_env(), timeout=timeout)
            results[row["id"]]["rc"] = proc.returncode
    else:
        proc = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(rows), capture_output=True, text=True,
                              env=_env(), timeout=timeout * 2 + 10 * len(rows))
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                done = json.loads(line)
                results[done["id"]].update(rc=done["rc"], seconds=done["seconds"])
        if proc.returncode != 0:
            for r in results.values():
                r.setdefault("driver_error", proc.stderr[-4000:])
    for row in rows:
        r = results[row["id"]]
        with open(row["stdout"]) as fh:
            r["stdout"] = fh.read()
        with open(row["stderr"]) as fh:
            r["stderr"] = fh.read()
        if row["id"] == "info-unreadable":
            os.chmod(os.path.join(row["cwd"], "locked.h5"), 0)  # unchanged mode is part of the snapshot
        r["after"] = _snapshot(row["cwd"])
    return results


def _active(c: Case) -> bool:
    return all(NEEDS[n]() for n in c.needs)


@pytest.fixture(scope="module")
def results(tmp_path_factory, request):
    """All selected rows, run once (``-k`` selects rows)."""
    selected = {item.callspec.params["c"].id for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input_is_refused_cleanly"}
    workdir = str(tmp_path_factory.mktemp("bad-inputs"))
    return run_cases([c for c in CASES if _active(c) and c.id in selected] + CONTROLS, workdir)


#: Rows that break the rules on purpose (negative controls for :func:`check_refusal`).
CONTROLS = [case("control-overwrites", IMPORT_F + " --out existing --overwrite --no-check", "x"),
            case("control-succeeds", "info data.h5 --json", "x")]


def check_refusal(c: Case, r: dict) -> None:
    """The rules every row must meet (AssertionError naming the broken one)."""
    where = f"latentlab {' '.join(repr(a) if (' ' in a or not a) else a for a in c.argv)}"
    assert "rc" in r, f"{where}: no result ({r.get('driver_error', '')})"
    stderr = r["stderr"]
    assert "Traceback" not in stderr, f"{where}: traceback\n{stderr}"
    assert r["rc"] == 2, f"{where}: exit code {r['rc']}\nstdout: {r['stdout']}\nstderr: {stderr}"
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{where}: expected one message, got\n{stderr}"
    assert lines[0].startswith(f"latentlab {c.argv[0]}: error: "), lines[0]
    assert ". Fix: " in lines[0], f"{where}: no fix in {lines[0]!r}"
    assert re.search(c.match, lines[0]), f"{where}: {lines[0]!r} does not match {c.match!r}"
    assert r["after"] == r["before"], f"{where}: files changed: " + ", ".join(
        sorted(k for k in set(r["before"]) | set(r["after"]) if r["before"].get(k) != r["after"].get(k)))


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(c, results):
    if not _active(c):
        pytest.skip(f"needs {', '.join(c.needs)}")
    check_refusal(c, results[c.id])


def test_catalogue_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    data_commands = {"import", "info", "datasets", "plot", "consistency", "train"}
    assert sum(c.argv[0] in data_commands for c in CASES) >= 30


def test_the_rules_fail_for_a_command_that_breaks_them(results):
    """Negative controls through the same runner: a success, an overwritten file, a traceback, two messages."""
    overwrites, succeeds = CONTROLS
    r = results
    with pytest.raises(AssertionError, match="exit code 0"):
        check_refusal(succeeds, r[succeeds.id])
    assert json.loads(r[succeeds.id]["stdout"])["frames"] == 600
    refused = "latentlab import: error: x: refused. Fix: y\n"
    with pytest.raises(AssertionError, match="files changed: existing.h5"):  # as if it had also failed
        check_refusal(overwrites, dict(r[overwrites.id], rc=2, stderr=refused))
    check_refusal(overwrites, dict(r[overwrites.id], rc=2, stderr=refused, after=r[overwrites.id]["before"]))
    fake = dict(r[succeeds.id], rc=1, stderr="Traceback (most recent call last):\n  ...\nZeroDivisionError\n")
    with pytest.raises(AssertionError, match="traceback"):
        check_refusal(succeeds, fake)
    fake = dict(r[succeeds.id], rc=2, stderr="latentlab info: error: bad. Fix: a\nlatentlab info: error: worse\n")
    with pytest.raises(AssertionError, match="one message"):
        check_refusal(succeeds, fake)
