"""Generate all-atom reference data with OpenMM (positions, forces, energies).

Systems (presets)
-----------------
``alanine-dipeptide``
    ACE-ALA-NME in vacuum, Amber ff14SB (``amber14-all.xml``), no cutoff,
    **no constraints**, 1 fs Langevin (``LangevinMiddleIntegrator``, friction
    1/ps).  Stored forces are the full forces ``-grad U`` on every atom.
``chignolin``
    A chignolin PDB (e.g. 1UAO) with water and ions stripped, Amber ff14SB +
    GBn2 implicit solvent (``implicit/gbn2.xml``), no cutoff, bonds to
    hydrogen constrained (``HBonds``) with hydrogen mass repartitioning
    (hydrogen mass 4 amu, taken from the bonded heavy atom) and a 4 fs step.
    The primary block holds CA atoms only, at the dense stride; the forces on
    them are *aggregated* over each CA's constraint group (CA + its
    hydrogens), which removes the constraint forces exactly (the constraint
    forces are internal to the rigid group and cancel in the sum; Kraemer et
    al., JCTC 19, 8, 2023, "aggforce").  An ``allatom`` block keeps all atoms
    at a coarser stride with raw forces and the constraint groups.
``protein``
    Any protein PDB (``--pdb``), same recipe as chignolin.

Stored masses are always the physical masses (HMR only changes the dynamics,
not the configurational Boltzmann distribution).

Resumable runs
--------------
While running, ``OUT.partial/`` holds ``run.json`` (parameters), numbered
segment files ``seg-NNNNN.npz`` and ``checkpoint.npz`` (the OpenMM State as
XML + how many segments/frames it corresponds to).  Every file there is
written to a temporary name and moved into place with ``os.replace``; a
segment is written *before* the checkpoint that counts it, so a kill at any
moment loses at most the frames since the last checkpoint, and those are
re-simulated from the checkpointed state (no duplicates, no gaps in time).
On completion the segments are assembled into ``OUT`` (atomic replace) and
``OUT.partial/`` is removed.  ``--resume`` continues ``OUT.partial/`` or
extends a finished ``OUT`` (its final state is stored in the file) to a
larger ``--ns``.  A run that fails or is refused before it saved a frame of
its own removes the ``OUT.partial/`` it created (nothing is left that was not
there before); a resumed ``OUT.partial/`` is never removed on failure.

Starting structures
-------------------
By default the preset's structure (or ``--pdb``) is minimised, given
Maxwell-Boltzmann velocities and equilibrated for ``--equilibrate`` ps.  With
``start_from`` (CLI ``--start-from DATA``) the starting positions are a frame
of an existing data set of the same system (all atoms, same order; the
all-atom block is used when the primary block is a subset), then minimised and
equilibrated the same way.  Replica ensembles on Dask
(:mod:`latentlab.data.ensemble`) run one :class:`Generator` per replica.

Blow-ups
--------
A time step too large for the system makes the coordinates NaN within a few
steps; OpenMM then raises "Particle coordinate is NaN".  Every such failure
(also NaN energies or positions that OpenMM returns without raising) ends in
one :class:`ValueError` that names the time step and suggests a smaller one.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import sys
import time as _time
from dataclasses import asdict, dataclass, field

import numpy as np

from latentlab.forces.constraints import aggregate_forces, constraint_groups  # noqa: F401 (re-exported)
from latentlab.io import EXTENSIONS, output_path
from latentlab.validation import check_nonnegative, check_positive, fail

PRESETS = {
    "alanine-dipeptide": dict(
        forcefield=["amber14-all.xml"], solvent="vacuum", constraints="none", timestep_fs=1.0,
        hydrogen_mass=0.0, selection=None, default_map="dihedrals:phi-psi", equilibrate_ps=10.0,
    ),
    "chignolin": dict(
        forcefield=["amber14-all.xml", "implicit/gbn2.xml"], solvent="implicit GBn2", constraints="hbonds",
        timestep_fs=4.0, hydrogen_mass=4.0, selection="name CA", default_map="triangle:name CA and (resid 0 5 9)",
        equilibrate_ps=100.0,
    ),
    "protein": dict(
        forcefield=["amber14-all.xml", "implicit/gbn2.xml"], solvent="implicit GBn2", constraints="hbonds",
        timestep_fs=4.0, hydrogen_mass=4.0, selection=None, default_map="", equilibrate_ps=100.0,
    ),
}

# Settings that must not change between a run and its --resume.
_FROZEN = ("system", "temperature", "save_every_ps", "allatom_every_ps", "selection", "timestep_fs", "constraints",
           "hydrogen_mass", "friction", "forcefield", "seed", "start_from", "start_frame")

#: Segment files in OUT.partial/ (a leftover ``seg-NNNNN.npz.tmp.npz`` of a killed write does not match).
_SEGMENT_GLOB = "seg-[0-9][0-9][0-9][0-9][0-9].npz"


@dataclass
class GenerateConfig:
    """Parameters of one generation run (units: ns, ps, fs, K, amu, 1/ps)."""

    system: str
    ns: float
    out: str
    temperature: float = 300.0
    save_every_ps: float = 1.0
    allatom_every_ps: float | None = None
    selection: str | None = None
    pdb: str | None = None
    platform: str = "auto"
    threads: int = 1
    seed: int = 0
    timestep_fs: float | None = None
    constraints: str | None = None
    hydrogen_mass: float | None = None
    friction: float = 1.0
    equilibrate_ps: float | None = None
    forcefield: list = field(default_factory=list)
    checkpoint_every_s: float = 60.0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    name: str | None = None
    start_from: str | None = None
    start_frame: int | None = None

    def resolved(self) -> "GenerateConfig":
        """Fill preset defaults and validate; returns a new config."""
        if self.system not in PRESETS:
            fail("system", f"got {self.system!r}", f"use one of {', '.join(PRESETS)} (protein needs --pdb)")
        p = PRESETS[self.system]
        c = GenerateConfig(**asdict(self))
        c.forcefield = list(c.forcefield or p["forcefield"])
        c.timestep_fs = p["timestep_fs"] if c.timestep_fs is None else c.timestep_fs
        c.constraints = p["constraints"] if c.constraints is None else c.constraints.lower()
        c.hydrogen_mass = p["hydrogen_mass"] if c.hydrogen_mass is None else c.hydrogen_mass
        c.equilibrate_ps = p["equilibrate_ps"] if c.equilibrate_ps is None else c.equilibrate_ps
        if c.selection is None:
            c.selection = p["selection"]
        if c.selection in ("", "all"):
            c.selection = None
        c.out = os.fspath(c.out)
        if c.out and not c.out.endswith(os.sep) and not os.path.splitext(c.out)[1]:
            c.out += EXTENSIONS["data"]  # `--out gen` writes gen.h5 (the output policy of every command)
        c.name = c.name or os.path.splitext(os.path.basename(c.out))[0]
        check_positive(c.ns, "ns", "ns")
        check_positive(c.temperature, "temperature", "K")
        check_positive(c.save_every_ps, "save_every", "ps")
        check_positive(c.timestep_fs, "timestep", "fs")
        check_nonnegative(c.friction, "friction", "1/ps")
        check_nonnegative(c.equilibrate_ps, "equilibrate", "ps")
        check_nonnegative(c.hydrogen_mass, "hydrogen_mass", "amu")
        if c.constraints not in ("none", "hbonds"):
            fail("constraints", f"got {c.constraints!r}", "use 'none' or 'hbonds'")
        if c.threads < 1:
            fail("threads", f"got {c.threads}", "pass at least 1")
        if c.platform not in ("auto", "CPU", "CUDA", "OpenCL", "Reference"):
            fail("platform", f"got {c.platform!r}", "use auto, CPU, CUDA, OpenCL or Reference")
        steps = c.save_every_ps * 1000.0 / c.timestep_fs
        if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
            fail("save_every", f"{c.save_every_ps} ps is not a whole number of {c.timestep_fs} fs steps",
                 f"use a multiple of {c.timestep_fs / 1000} ps")
        if c.selection is not None and c.allatom_every_ps is None:
            c.allatom_every_ps = 10.0 * c.save_every_ps  # all-atom frames at a 10x coarser stride by default
        if c.allatom_every_ps is not None:
            if c.selection is None:
                fail("allatom_every", "only makes sense with a selection (the primary block is already all atoms)",
                     "drop --allatom-every or add --select")
            ratio = c.allatom_every_ps / c.save_every_ps
            if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
                fail("allatom_every", f"{c.allatom_every_ps} ps is not a multiple of --save-every {c.save_every_ps} ps",
                     "choose a whole multiple of --save-every")
        if c.system == "protein" and not c.pdb:
            fail("pdb", "system 'protein' needs a structure", "pass --pdb FILE.pdb")
        if c.system == "chignolin" and not c.pdb and not os.path.exists(_builtin_chignolin()):
            fail("pdb", "chignolin is built from a PDB file that latentlab does not ship (and the built-in data set is absent)",
                 "pass --pdb 1uao.pdb (download from https://www.rcsb.org/structure/1UAO)")
        if c.pdb and not os.path.exists(c.pdb):
            raise FileNotFoundError(f"pdb: {c.pdb} does not exist. Fix: check the path")
        if c.start_frame is not None and c.start_from is None:
            fail("start_frame", "given without a data set to take the frame from", "add --start-from DATA")
        if c.start_from is not None:
            from latentlab.data import ANALYTIC, resolve

            source = resolve(c.start_from)  # FileNotFoundError naming the built-ins if neither
            if source in ANALYTIC:
                fail("start_from", f"{source!r} is an analytic system without atoms of {c.system}",
                     f"pass a data set of {c.system} (a built-in name or a file written by latentlab generate)")
            c.start_from = source if source in _builtin_names() else os.path.abspath(source)
            c.start_frame = None if c.start_frame is None else int(c.start_frame)
        if c.hydrogen_mass and c.hydrogen_mass > 0 and c.timestep_fs > 2.0 and c.constraints == "none":
            fail("timestep", f"{c.timestep_fs} fs without constraints is unstable",
                 "use --constraints hbonds with --timestep 4, or --timestep 1 without constraints")
        return c

    @property
    def save_steps(self) -> int:
        return int(round(self.save_every_ps * 1000.0 / self.timestep_fs))

    @property
    def allatom_stride(self) -> int | None:
        return None if self.allatom_every_ps is None else int(round(self.allatom_every_ps / self.save_every_ps))

    @property
    def total_frames(self) -> int:
        return int(round(self.ns * 1000.0 / self.save_every_ps))


# --------------------------------------------------------------------------- system setup


def _builtin_chignolin() -> str:
    return os.path.join(os.path.dirname(__file__), "builtin", "chignolin.h5")


def _builtin_names() -> list[str]:
    from latentlab.data import BUILTIN_FILES

    return list(BUILTIN_FILES)


class _StartBlock:
    """The frames of a data set that can start a run of a system: ``n_frames``, ``masses`` and ``positions(i)``.

    latentlab HDF5 files (and the built-ins) are read one frame at a time; other formats through
    :func:`latentlab.data.load`.
    """

    def __init__(self, source: str, n_atoms: int, system: str):
        from latentlab.data import BUILTIN_FILES, builtin_path
        from latentlab.data.store import is_latentlab_file

        self.source = source
        self.path = builtin_path(source) if source in BUILTIN_FILES else source
        self.group = None
        sizes = []
        if is_latentlab_file(self.path):
            import h5py

            with h5py.File(self.path, "r") as fh:
                for name in ("/", "allatom"):  # the CA-only chignolin set keeps all atoms in its all-atom block
                    if name in fh and "positions" in fh[name]:
                        shape = fh[name]["positions"].shape
                        sizes.append(shape[1])
                        if shape[1] == n_atoms and self.group is None:
                            self.group, self.n_frames, self.masses = name, shape[0], fh[name]["masses"][()]
            self._dataset = None
        else:
            from latentlab.data import load

            ds = load(source)
            sizes.append(ds.n_atoms)
            if ds.n_atoms != n_atoms and ds.has_allatom:
                ds = ds.allatom()
                sizes.append(ds.n_atoms)
            if ds.n_atoms == n_atoms:
                self.group, self.n_frames, self.masses, self._dataset = "dataset", ds.n_frames, ds.masses, ds
        if self.group is None:
            fail("start_from", f"{source} has {' / '.join(str(n) for n in sizes)} atoms but the {system} system has {n_atoms}",
                 f"start from a data set of {system} with all atoms (e.g. one written by latentlab generate {system})")
        self.system = system

    def check_masses(self, masses: np.ndarray) -> None:
        if not np.allclose(self.masses, masses, atol=0.01):
            bad = np.nonzero(~np.isclose(self.masses, masses, atol=0.01))[0]
            fail("start_from", f"{self.source} has other atoms than the {self.system} system (masses differ at atoms "
                 f"{bad[:10].tolist()})", "start from a data set of the same system, atoms in the same order")

    def positions(self, frame: int | None) -> np.ndarray:
        index = self.n_frames - 1 if frame is None else int(frame)
        if not -self.n_frames <= index < self.n_frames:
            fail("start_frame", f"got {frame} but {self.source} has {self.n_frames} frames", f"use 0 .. {self.n_frames - 1}")
        if self._dataset is not None:
            return np.asarray(self._dataset.positions[index], dtype=np.float64)
        import h5py

        with h5py.File(self.path, "r") as fh:
            return np.asarray(fh[self.group]["positions"][index % self.n_frames], dtype=np.float64)


def start_positions(source: str, frame: int | None, masses: np.ndarray, system: str) -> np.ndarray:
    """Starting positions from a frame of an existing data set of the same system.

    Parameters
    ----------
    source : str
        Built-in name or path of a data set (anything :func:`latentlab.data.load` reads).
    frame : int or None
        Frame index (negative counts from the end); None = the last frame.
    masses : array, shape=(n_atoms,), amu
        Physical masses of the system being simulated, to check that the atoms match.
    system : str
        Preset name, for messages.

    Returns
    -------
    positions : array, shape=(n_atoms, 3), nm
    """
    block = _StartBlock(source, len(masses), system)
    block.check_masses(masses)
    return block.positions(frame)


def _is_nan_error(err: BaseException) -> bool:
    """True for OpenMM's "Particle coordinate is NaN" (and similar NaN failures) of a blown-up simulation."""
    return type(err).__name__ == "OpenMMException" and "nan" in str(err).lower()


def _blow_up(cfg: "GenerateConfig", where: str) -> None:
    """Raise the one clear error of a blown-up simulation, with a suggested time step."""
    preset = PRESETS[cfg.system]["timestep_fs"]
    suggest = preset if cfg.timestep_fs > preset else cfg.timestep_fs / 2.0
    hint = "" if cfg.timestep_fs > preset else "; if it still blows up, check the starting structure (clashes) and the force field"
    fail("timestep", f"the simulation blew up {where} (particle coordinates became NaN): a time step of {cfg.timestep_fs:g} fs "
         f"is too large for {cfg.system} with constraints={cfg.constraints}",
         f"use a smaller --timestep, e.g. {suggest:g} fs (the {cfg.system} preset uses {preset:g} fs){hint}")


def _n_frames_in(path: str) -> int:
    import h5py

    with h5py.File(path, "r") as fh:
        return int(fh["positions"].shape[0])


def build_system(cfg: GenerateConfig):
    """Return ``(topology, positions, system, physical_masses)`` for a resolved config."""
    import openmm.app as app
    import openmm.unit as u

    from latentlab.data.structures import ALANINE_DIPEPTIDE_PDB

    ff = app.ForceField(*cfg.forcefield)
    if cfg.system == "alanine-dipeptide" and not cfg.pdb:
        pdb = app.PDBFile(ALANINE_DIPEPTIDE_PDB)
        topology, positions = pdb.topology, pdb.positions
    else:
        try:
            if cfg.system == "chignolin" and not cfg.pdb:
                # the all-atom topology stored in the built-in data set (generated from 1UAO)
                from latentlab.data.store import read_h5

                pdb = app.PDBFile(io.StringIO(read_h5(_builtin_chignolin(), "allatom")["topology_pdb"]))
            else:
                pdb = app.PDBFile(cfg.pdb)
        except Exception as err:  # OpenMM raises various types for malformed files
            raise ValueError(f"pdb: {cfg.pdb} could not be read as PDB ({err}). Fix: pass a valid PDB file") from None
        modeller = app.Modeller(pdb.topology, pdb.positions)
        modeller.deleteWater()
        ions = [a for a in modeller.topology.atoms() if a.residue.name in ("NA", "CL", "K", "MG", "CA", "ZN", "Na+", "Cl-", "SOD", "CLA")
                and len(list(a.residue.atoms())) == 1]
        modeller.delete(ions)
        modeller.delete([r for r in modeller.topology.residues() if r.name in ("HOH", "WAT", "SOL")])
        try:
            modeller.addHydrogens(ff)
        except Exception as err:
            raise ValueError(f"pdb: could not add hydrogens with {cfg.forcefield} ({err}). Fix: check residue names / use a cleaned PDB (pdbfixer)") from None
        topology, positions = modeller.topology, modeller.positions
    constraints = app.HBonds if cfg.constraints == "hbonds" else None
    kwargs = dict(nonbondedMethod=app.NoCutoff, constraints=constraints, rigidWater=False)
    try:
        plain = ff.createSystem(topology, **kwargs)
        system = ff.createSystem(topology, hydrogenMass=cfg.hydrogen_mass * u.amu, **kwargs) if cfg.hydrogen_mass else plain
    except Exception as err:
        raise ValueError(f"forcefield: {cfg.forcefield} has no parameters for this structure ({err}). "
                         "Fix: use a standard protein PDB (strip ligands) or other force-field files") from None
    masses = np.array([plain.getParticleMass(i).value_in_unit(u.amu) for i in range(plain.getNumParticles())])
    return topology, positions, system, masses


def make_platform(name: str, threads: int, system, integrator_factory, positions):
    """Return ``(openmm.Platform, properties)``; ``auto`` = CUDA if present, else the faster of CPU/Reference."""
    import openmm

    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]

    def props(pname):
        return {"Threads": str(threads)} if pname == "CPU" else ({"Precision": "mixed"} if pname in ("CUDA", "OpenCL") else {})

    if name != "auto":
        if name not in available:
            fail("platform", f"{name} is not available here (available: {', '.join(available)})", "use --platform auto")
        return openmm.Platform.getPlatformByName(name), props(name)
    if "CUDA" in available:
        return openmm.Platform.getPlatformByName("CUDA"), props("CUDA")
    timings = {}
    for pname in ("CPU", "Reference"):
        if pname not in available:
            continue
        integ = integrator_factory()
        ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName(pname), props(pname))
        ctx.setPositions(positions)
        integ.step(3)
        t0 = _time.perf_counter()
        integ.step(20)
        timings[pname] = _time.perf_counter() - t0
        del ctx, integ
    best = min(timings, key=timings.get)
    return openmm.Platform.getPlatformByName(best), props(best)


def _versions() -> dict:
    import platform as _pf

    import mdtraj
    import openmm

    from importlib.metadata import version

    return {"openmm": openmm.__version__, "mdtraj": mdtraj.__version__, "numpy": np.__version__,
            "latentlab": version("latentlab"), "python": _pf.python_version()}


def _pdb_text(topology, xyz_nm: np.ndarray, atoms: np.ndarray | None = None) -> str:
    """PDB text of one frame (optionally an atom subset) via mdtraj."""
    import tempfile

    import mdtraj as md

    traj = md.Trajectory(np.asarray(xyz_nm, dtype=np.float32)[None], md.Topology.from_openmm(topology))
    if atoms is not None:
        traj = traj.atom_slice(atoms)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "top.pdb")
        traj.save_pdb(path)
        with open(path) as fh:
            return fh.read()


def _atomic_savez(path: str, **arrays) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def nothing_to_resume(work: str, out: str) -> None:
    """Refuse ``--resume`` when neither ``work`` (``OUT.partial/``) nor ``out`` exists."""
    fail("resume", f"nothing to resume: neither {work}/ nor {out} exists", "run without --resume")


def refuse_existing(work: str, out: str) -> None:
    """Without ``--resume`` or ``--overwrite``: refuse an interrupted run in ``work`` or an existing ``out``."""
    if os.path.isdir(work):
        fail("out", f"an interrupted run exists in {work}/", "pass --resume to continue it, or --overwrite to start again")
    if os.path.exists(out):
        fail("out", f"{out} exists", "pass --resume to extend it, --overwrite to replace it, or choose another --out")


# --------------------------------------------------------------------------- the run


class Generator:
    """Runs one resumable generation (see module docstring).

    Parameters
    ----------
    cfg : GenerateConfig
    log : callable
        Receives one-line messages (default ``print``).
    on_progress : callable, optional
        ``on_progress(n_frames, total_frames, frames_this_run, elapsed_s)``, called about once a second
        from the simulation loop and once at its end (the replica ensembles report progress with it).
    guard : callable, optional
        Called before every checkpoint; raising there stops the run without writing (a replica whose
        work was taken over by another attempt stops this way).
    """

    def __init__(self, cfg: GenerateConfig, log=print, on_progress=None, guard=None):
        self.cfg = cfg.resolved()
        self.log = log
        self.on_progress = on_progress
        self.guard = guard
        self.work = self.cfg.out + ".partial"
        self.platform_name = ""
        self.ns_per_day = 0.0  # of the simulation loop of this call (0 if nothing was simulated)
        self.frames_this_run = 0
        self.loop_seconds = 0.0
        self.loop_cpu_seconds = 0.0  # CPU time of this process during the loop (all its threads)
        self._saved_new = False  # has this call checkpointed frames of its own?

    # -- bookkeeping -------------------------------------------------------
    def _check_paths(self) -> None:
        cfg = self.cfg
        if os.path.exists(os.path.join(self.work, "ensemble.json")) and not cfg.overwrite:
            with open(os.path.join(self.work, "ensemble.json")) as fh:
                k = json.load(fh)["replicas"]
            fail("resume" if cfg.resume else "out", f"{self.work}/ holds an interrupted ensemble of {k} replicas",
                 f"continue it with --replicas {k} --resume, or pass --overwrite to start again")
        if cfg.resume:
            if not os.path.isdir(self.work) and not os.path.exists(cfg.out):
                nothing_to_resume(self.work, cfg.out)
        elif not cfg.overwrite:
            refuse_existing(self.work, cfg.out)
        # the output policy of every command: not an input, directory exists and is writable
        output_path(cfg.out, "data", overwrite=True, inputs=[cfg.pdb, cfg.start_from])

    def _frozen(self) -> dict:
        return {k: getattr(self.cfg, k) for k in _FROZEN}

    def _segments(self) -> list[str]:
        return sorted(glob.glob(os.path.join(self.work, _SEGMENT_GLOB)))

    # -- main ---------------------------------------------------------------
    def run(self) -> str:
        """Run, resume or extend; returns the output path.

        A failure before this call checkpointed frames of its own removes the ``OUT.partial/``
        that this call created; an ``OUT.partial/`` that existed before is left as it was.
        """
        had_work = os.path.isdir(self.work) and (self.cfg.resume or not self.cfg.overwrite)  # --overwrite discards it
        try:
            return self._run()
        except BaseException:
            if not had_work and not self._saved_new and os.path.isdir(self.work):
                shutil.rmtree(self.work, ignore_errors=True)
            raise

    def _selection(self, topology, groups: np.ndarray, n_atoms: int):
        """Indices of the atoms ``--select`` keeps (validated against the constraint groups), or None for all."""
        cfg = self.cfg
        if not cfg.selection:
            return None
        import mdtraj as md

        try:
            sel = md.Topology.from_openmm(topology).select(cfg.selection)
        except Exception as err:
            raise ValueError(f"select: {cfg.selection!r} is not a valid mdtraj selection ({err}). Fix: e.g. --select 'name CA'") from None
        if len(sel) == 0:
            fail("select", f"{cfg.selection!r} selects no atoms", "check the selection, e.g. 'name CA'")
        aggregate_forces(np.zeros((1, n_atoms, 3)), groups, sel)  # validates the selection early
        return sel

    def _resumes_partial(self, ck: str, run_json: str) -> bool:
        """Whether to continue from ``OUT.partial/`` (its settings checked): False when OUT is newer."""
        cfg = self.cfg
        if not (cfg.resume and os.path.exists(ck) and os.path.exists(run_json)):
            return False
        with open(run_json) as fh:
            self._check_same(json.load(fh)["frozen"])
        with np.load(ck) as z:
            ck_frames = int(z["n_frames"])
        # killed while tidying up after writing OUT: OUT is the newer
        return not (os.path.exists(cfg.out) and ck_frames <= _n_frames_in(cfg.out))

    def _extended_output(self) -> dict:
        """The finished OUT that ``--resume`` extends (:func:`read_h5` of it), its settings and final state checked."""
        from latentlab.data.store import read_h5

        cfg = self.cfg
        prim = read_h5(cfg.out)
        self._check_same(json.loads(prim["attrs"].get("generate_config", "{}")).get("frozen", {}))
        if prim.get("replica") is not None and len(np.unique(prim["replica"])) > 1:
            k = len(np.unique(prim["replica"]))
            fail("resume", f"{cfg.out} is an ensemble of {k} replicas", f"pass --replicas {k} to extend it")
        if "resume_state_xml" not in prim:
            fail("resume", f"{cfg.out} has no stored final state", "regenerate it, or choose another --out")
        return prim

    def _clear_work(self, from_partial: bool, prim) -> None:
        """Remove an ``OUT.partial/`` with nothing worth keeping, or the one ``--overwrite`` replaces."""
        cfg = self.cfg
        if cfg.resume and os.path.isdir(self.work) and not from_partial:
            # killed before the first checkpoint, or after OUT was written: nothing there is worth keeping
            shutil.rmtree(self.work)
            if prim is None:
                self.log(f"{self.work}/ held no checkpoint; starting again")
        elif cfg.overwrite and not cfg.resume:
            shutil.rmtree(self.work, ignore_errors=True)

    def _partial_state(self, ck: str):
        """State of ``OUT.partial/``: ``(state_xml, n_segments, n_frames, n_full, step, static)``.

        Segments written after the last checkpoint are removed (they are simulated again).
        """
        with np.load(ck) as z:
            state_xml = str(z["state_xml"])
            n_segments, n_frames, n_full, step = (int(z[k]) for k in ("n_segments", "n_frames", "n_full", "step"))
        for path in self._segments()[n_segments:]:  # written after the last checkpoint: re-simulated
            os.remove(path)
        static = dict(np.load(os.path.join(self.work, "static.npz")))
        self.log(f"resuming {self.work}/ at {n_frames} frames ({n_frames * self.cfg.save_every_ps / 1000:.4f} ns)")
        return state_xml, n_segments, n_frames, n_full, step, static

    def _new_work(self, run_json: str) -> None:
        """Create ``OUT.partial/`` with its ``run.json`` (first: a directory with a checkpoint always has it)."""
        os.makedirs(self.work)
        with open(run_json + ".tmp", "w") as fh:
            json.dump({"frozen": self._frozen(), "config": asdict(self.cfg)}, fh, indent=1)
        os.replace(run_json + ".tmp", run_json)

    def _seed_from_output(self, prim: dict, ck: str, masses, groups, sel, n_atoms: int):
        """Copy a finished OUT's frames into ``OUT.partial/`` as its first segment, checkpointed at once.

        Returns ``(state_xml, n_segments, n_frames, n_full, step, static)`` to continue from.
        """
        from latentlab.data.store import read_h5

        cfg = self.cfg
        state_xml = prim["resume_state_xml"]
        blocks = {"positions": prim["positions"], "forces": prim["forces"], "energies": prim["energies"], "time": prim["time"]}
        if prim["has_allatom"]:
            full = read_h5(cfg.out, "allatom")
            blocks.update({"full_" + k: full[k] for k in ("positions", "forces", "energies", "time")})
        n_frames = len(prim["time"])
        n_full = len(blocks["full_time"]) if "full_time" in blocks else 0
        step = int(round(prim["time"][-1] * 1000.0 / cfg.timestep_fs))
        full_pdb = read_h5(cfg.out, "allatom").get("topology_pdb", "") if prim["has_allatom"] else prim.get("topology_pdb", "")
        static = dict(masses=masses, groups=groups, sel=np.asarray(sel if sel is not None else np.arange(n_atoms)),
                      topology_pdb=np.array(full_pdb or ""),
                      sel_pdb=np.array(prim.get("topology_pdb", "") if sel is not None else ""))
        _atomic_savez(os.path.join(self.work, "static.npz"), **static)
        _atomic_savez(os.path.join(self.work, "seg-00000.npz"), **blocks)
        n_segments = 1
        # checkpoint at once: a kill before the first new segment must still resume from here
        _atomic_savez(ck, state_xml=np.array(state_xml), n_segments=n_segments, n_frames=n_frames,
                      n_full=n_full, step=step)
        self.log(f"extending {cfg.out} from {n_frames} frames")
        return state_xml, n_segments, n_frames, n_full, step, static

    def _equilibrate(self, context, integrator, topology, positions, masses, groups, sel, n_atoms: int,
                     seed_mix: int) -> dict:
        """Minimise, draw velocities, equilibrate (not saved); write and return the static arrays of the run."""
        import openmm
        import openmm.unit as u

        cfg = self.cfg
        context.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(context, 10.0, 0)
        context.setVelocitiesToTemperature(cfg.temperature * u.kelvin, seed_mix)
        n_eq = int(round(cfg.equilibrate_ps * 1000.0 / cfg.timestep_fs))
        if n_eq:
            self.log(f"equilibrating {cfg.equilibrate_ps} ps ({n_eq} steps, not saved)")
            integrator.step(n_eq)
        xyz0 = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        if not np.isfinite(xyz0).all():
            _blow_up(cfg, "during minimisation and equilibration")
        static = dict(
            masses=masses, groups=groups, sel=np.asarray(sel if sel is not None else np.arange(n_atoms)),
            topology_pdb=np.array(_pdb_text(topology, xyz0)),
            sel_pdb=np.array(_pdb_text(topology, xyz0, sel) if sel is not None else ""),
        )
        _atomic_savez(os.path.join(self.work, "static.npz"), **static)
        context.setTime(0.0)
        context.setStepCount(0)
        return static

    def _run(self) -> str:
        import openmm
        import openmm.unit as u
        from openmm import XmlSerializer

        cfg = self.cfg
        self._check_paths()
        topology, positions, system, masses = build_system(cfg)
        groups = constraint_groups(system, masses)
        n_atoms = system.getNumParticles()
        sel = self._selection(topology, groups, n_atoms)
        if cfg.start_from is not None:
            positions = start_positions(cfg.start_from, cfg.start_frame, masses, cfg.system) * u.nanometer

        # What to continue from, decided (and every setting checked) before anything is written.
        ck = os.path.join(self.work, "checkpoint.npz")
        run_json = os.path.join(self.work, "run.json")
        from_partial = self._resumes_partial(ck, run_json)
        prim = None
        if cfg.resume and not from_partial and os.path.exists(cfg.out):  # extend a finished file
            prim = self._extended_output()
            if len(prim["time"]) >= cfg.total_frames:
                shutil.rmtree(self.work, ignore_errors=True)  # a stale OUT.partial/ of a finished run
                self.log(f"{cfg.out} already has {len(prim['time'])} frames >= {cfg.total_frames} requested; nothing to do")
                return cfg.out

        def integrator_factory():
            return openmm.LangevinMiddleIntegrator(cfg.temperature * u.kelvin, cfg.friction / u.picosecond,
                                                  cfg.timestep_fs * u.femtosecond)

        where = "while OpenMM timed the platforms (the first steps)"
        try:
            platform, props = make_platform(cfg.platform, cfg.threads, system, integrator_factory, positions)
            self._clear_work(from_partial, prim)
            # State: fresh, from OUT.partial/, or from a finished OUT.
            state_xml, n_segments, n_frames, n_full, step, static = None, 0, 0, 0, 0, None
            if from_partial:
                state_xml, n_segments, n_frames, n_full, step, static = self._partial_state(ck)
            else:
                self._new_work(run_json)
                if prim is not None:
                    state_xml, n_segments, n_frames, n_full, step, static = self._seed_from_output(
                        prim, ck, masses, groups, sel, n_atoms)
            integrator = integrator_factory()
            seed_mix = (cfg.seed * 1_000_003 + n_segments * 7919 + 12345) % (2**31 - 1) + 1
            integrator.setRandomNumberSeed(seed_mix)
            context = openmm.Context(system, integrator, platform, props)
            if state_xml is None:
                where = "during minimisation and equilibration"
                static = self._equilibrate(context, integrator, topology, positions, masses, groups, sel, n_atoms,
                                           seed_mix)
            else:
                context.setState(XmlSerializer.deserialize(state_xml))
            self.platform_name = platform.getName()
            where = None
            self._loop(context, integrator, static, n_segments, n_frames, n_full, step)
        except Exception as err:
            if _is_nan_error(err):
                _blow_up(cfg, where or f"near {self._last_step * cfg.timestep_fs / 1000.0:g} ps")
            raise
        return self._assemble(static)

    def _check_same(self, saved: dict) -> None:
        now = self._frozen()
        diff = {k: (saved.get(k), now[k]) for k in now if k in saved and saved.get(k) != now[k]}
        if diff:
            fail("resume", f"settings differ from the interrupted run: {diff} (saved, now)",
                 "resume with the same options (only --ns, --platform and --threads may change)")

    _last_step = 0

    def _loop(self, context, integrator, static, n_segments, n_frames, n_full, step) -> None:
        import openmm.unit as u
        from openmm import XmlSerializer

        cfg = self.cfg
        total = cfg.total_frames
        self._last_step = step
        if n_frames >= total:
            self.log(f"already {n_frames} frames >= {total} requested; nothing to simulate")
            if self.on_progress is not None:
                self.on_progress(n_frames, total, 0, 0.0)
            return
        sel = static["sel"]
        groups = static["groups"]
        aggregate = bool(cfg.selection) and bool((groups != np.arange(len(groups))).any())
        stride = cfg.allatom_stride
        buf = {k: [] for k in ("positions", "forces", "energies", "time", "full_positions", "full_forces", "full_energies", "full_time")}
        nm, kjmol, kjmolnm = u.nanometer, u.kilojoule_per_mole, u.kilojoule_per_mole / u.nanometer

        def flush():
            nonlocal n_segments
            if not buf["time"]:
                return
            if self.guard is not None:
                self.guard()
            arrays = {k: np.asarray(v) for k, v in buf.items() if v}
            seg = os.path.join(self.work, f"seg-{n_segments:05d}.npz")
            _atomic_savez(seg, **arrays)  # 1. the frames
            n_segments += 1
            state = context.getState(getPositions=True, getVelocities=True, getParameters=True)
            _atomic_savez(os.path.join(self.work, "checkpoint.npz"),  # 2. the state that follows them
                          state_xml=np.array(XmlSerializer.serialize(state)), n_segments=n_segments,
                          n_frames=n_frames, n_full=n_full, step=step)
            self._saved_new = True
            for v in buf.values():
                v.clear()

        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=round(cfg.ns * 1000.0, 6), initial=round(n_frames * cfg.save_every_ps, 6), unit="ps",
                       desc=f"generate {cfg.system}", mininterval=2.0, file=sys.stderr, dynamic_ncols=True)
        t_start = _time.perf_counter()
        cpu_start = _time.process_time()
        t_flush = t_report = t_start
        frames_this_run = 0
        try:
            while n_frames < total:
                integrator.step(cfg.save_steps)
                step += cfg.save_steps
                self._last_step = step
                st = context.getState(getPositions=True, getForces=True, getEnergy=True)
                xyz = st.getPositions(asNumpy=True).value_in_unit(nm)
                f = st.getForces(asNumpy=True).value_in_unit(kjmolnm)
                e = st.getPotentialEnergy().value_in_unit(kjmol)
                with np.errstate(over="ignore", invalid="ignore"):
                    xyz32, f32 = xyz.astype(np.float32), f.astype(np.float32)  # as stored
                if not (np.isfinite(e) and np.isfinite(xyz32).all() and np.isfinite(f32).all()):
                    _blow_up(cfg, f"near {step * cfg.timestep_fs / 1000.0:g} ps")
                t = step * cfg.timestep_fs / 1000.0
                n_frames += 1
                frames_this_run += 1
                if cfg.selection:
                    buf["positions"].append(xyz32[sel])
                    fs = aggregate_forces(f[None], groups, sel)[0] if aggregate else f[sel]
                    buf["forces"].append(fs.astype(np.float32))
                else:
                    buf["positions"].append(xyz32)
                    buf["forces"].append(f32)
                buf["energies"].append(e)
                buf["time"].append(t)
                if stride and n_frames % stride == 0:
                    n_full += 1
                    buf["full_positions"].append(xyz32)
                    buf["full_forces"].append(f32)
                    buf["full_energies"].append(e)
                    buf["full_time"].append(t)
                now = _time.perf_counter()
                if now - t_flush >= cfg.checkpoint_every_s or n_frames == total or len(buf["time"]) >= 20000:
                    flush()
                    t_flush = now
                if self.on_progress is not None and (now - t_report >= 1.0 or n_frames == total):
                    self.on_progress(n_frames, total, frames_this_run, now - t_start)
                    t_report = now
                if bar is not None:
                    elapsed = now - t_start
                    ns_day = frames_this_run * cfg.save_every_ps / 1000.0 / max(elapsed, 1e-9) * 86400.0
                    bar.set_postfix_str(f"{ns_day:.1f} ns/day", refresh=False)
                    bar.update(cfg.save_every_ps)
        finally:
            if bar is not None:
                bar.close()
        elapsed = _time.perf_counter() - t_start
        self.frames_this_run, self.loop_seconds = frames_this_run, elapsed
        self.loop_cpu_seconds = _time.process_time() - cpu_start
        self.ns_per_day = frames_this_run * cfg.save_every_ps / 1000.0 / max(elapsed, 1e-9) * 86400.0
        self.log(f"simulated {frames_this_run * cfg.save_every_ps / 1000.0:.4f} ns in {elapsed:.1f} s "
                 f"({self.ns_per_day:.1f} ns/day on {self.platform_name})")

    def _assemble(self, static) -> str:
        from latentlab.data.store import write_h5

        cfg = self.cfg
        ck = os.path.join(self.work, "checkpoint.npz")
        with np.load(ck) as z:
            n_segments = int(z["n_segments"])
            n_checkpointed = int(z["n_frames"])
            state_xml = str(z["state_xml"])
        parts = {}
        for path in self._segments()[:n_segments]:
            with np.load(path) as z:
                for k in z.files:
                    parts.setdefault(k, []).append(z[k])
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        time = cat["time"]
        expected = np.arange(1, len(time) + 1) * cfg.save_every_ps
        if len(time) != n_checkpointed or not np.allclose(time, expected, atol=1e-6 * max(1.0, expected[-1])):
            raise RuntimeError(f"internal error: {self.work}/ holds {len(time)} frames, its checkpoint counts {n_checkpointed}, "
                               "or the frame times are not contiguous; the partial run is kept for inspection")
        sel = static["sel"]
        masses, groups = static["masses"], static["groups"]
        aggregated = bool(cfg.selection) and bool((groups != np.arange(len(groups))).any())
        has_constraints = bool((groups != np.arange(len(groups))).any())
        prim_groups = groups if (has_constraints and not cfg.selection) else None
        attrs = dict(
            name=cfg.name, temperature=float(cfg.temperature), default_map=PRESETS[cfg.system]["default_map"],
            forces_aggregated=aggregated, forcefield=",".join(cfg.forcefield), solvent=PRESETS[cfg.system]["solvent"],
            nonbonded_method="NoCutoff", integrator="LangevinMiddleIntegrator", timestep_ps=cfg.timestep_fs / 1000.0,
            friction_per_ps=float(cfg.friction), constraints=cfg.constraints, hydrogen_mass_amu=float(cfg.hydrogen_mass),
            seed=int(cfg.seed), save_every_ps=float(cfg.save_every_ps), selection=cfg.selection or "all",
            platform=self.platform_name, versions=_versions(), system=cfg.system,
            equilibrate_ps=float(cfg.equilibrate_ps), command=" ".join(sys.argv),
            generate_config=json.dumps({"frozen": self._frozen()}),
        )
        if cfg.start_from is not None:
            attrs.update(start_from=cfg.start_from, start_frame=-1 if cfg.start_frame is None else int(cfg.start_frame))
        primary = dict(positions=cat["positions"], forces=cat["forces"], energies=cat["energies"], time=time,
                       masses=masses[sel] if cfg.selection else masses,
                       topology_pdb=str(static["sel_pdb"]) if cfg.selection else str(static["topology_pdb"]),
                       constraint_group=prim_groups)
        allatom = None
        if cfg.selection and "full_time" in cat:
            allatom = dict(positions=cat["full_positions"], forces=cat["full_forces"], energies=cat["full_energies"],
                           time=cat["full_time"], masses=masses, topology_pdb=str(static["topology_pdb"]),
                           constraint_group=groups, attrs={"atom_indices": np.asarray(sel, dtype=np.int64),
                                                           "forces_aggregated": False})
        write_h5(cfg.out, primary, attrs, allatom=allatom, resume_state_xml=state_xml)
        os.remove(ck)  # first: a kill during the removal below leaves a folder that --resume discards
        shutil.rmtree(self.work, ignore_errors=True)
        self.log(f"wrote {cfg.out}: {len(time)} frames x {primary['positions'].shape[1]} atoms"
                 + (f", all-atom block {len(cat['full_time'])} frames" if allatom else "")
                 + f" ({os.path.getsize(cfg.out) / 1e6:.2f} MB)")
        return cfg.out


def generate(cfg: GenerateConfig, log=print) -> str:
    """Run (or resume) a generation; returns the output path."""
    return Generator(cfg, log=log).run()
