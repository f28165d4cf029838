"""``latentlab import``: convert users' arrays or trajectories into a latentlab data-set file."""

from __future__ import annotations

FORCE_UNITS = ["kJ/mol/nm", "kJ/mol/angstrom", "kcal/mol/nm", "kcal/mol/angstrom"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert positions (+ forces) from .npy/.npz or any mdtraj trajectory into a latentlab .h5",
        description="""
        Import positions (and forces, energies) into the latentlab HDF5 format, converting units and refusing
        inconsistent input: shapes, lengths, NaN/inf frames, nm/Angstrom mix-ups in the positions, and forces
        whose size does not match the positions at the stated temperature (a kcal/kJ or nm/Angstrom mistake;
        --no-check skips that test). Without --topology the bonds are inferred from the masses and distances and
        stored with the data.""",
    )
    p.add_argument("--positions", required=True,
                   help="positions (n_frames, n_atoms, 3) as .npy/.npz, or any mdtraj-readable trajectory")
    p.add_argument("--forces", default=None, help="forces F = -grad U (n_frames, n_atoms, 3) as .npy/.npz, in ENERGY-UNIT/LENGTH-UNIT")
    p.add_argument("--energies", default=None, help="potential energies (n_frames,) as .npy/.npz, in ENERGY-UNIT")
    p.add_argument("--topology", default=None,
                   help="topology (PDB) of exactly these atoms; gives masses if --masses is absent "
                        "(default: bonds inferred from masses and distances)")
    p.add_argument("--masses", default=None, help="masses in amu, one per atom: m1,m2,... or a .npy/.npz file")
    p.add_argument("--temperature", type=float, required=True, help="K")
    p.add_argument("--length-unit", default="nm", choices=["nm", "angstrom"], help="unit of .npy positions and of forces (default nm)")
    p.add_argument("--energy-unit", default="kJ/mol", choices=["kJ/mol", "kcal/mol"], help="unit of energies and forces (default kJ/mol)")
    p.add_argument("--force-unit", default=None, choices=FORCE_UNITS,
                   help="unit of the forces when it is not ENERGY-UNIT/LENGTH-UNIT")
    time = p.add_mutually_exclusive_group()
    time.add_argument("--dt", type=float, default=None, help="ps between frames (stored as the time axis)")
    time.add_argument("--time", default=None, help="time of each frame in ps, .npy/.npz (default: the trajectory's, if it has one)")
    p.add_argument("--drop-nonfinite", action="store_true",
                   help="drop frames containing NaN/inf instead of refusing them (they leave gaps in the time axis)")
    p.add_argument("--default-map", default=None, help="map spec stored as the data set's default (e.g. 'dihedrals:phi-psi')")
    p.add_argument("--name", default=None, help="data-set name (default: output file name)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the test that the forces fit the positions at --temperature (units, sign)")
    p.add_argument("--out", required=True, help="output file (.h5 added when there is no extension; written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def parse_masses(text: str | None):
    """``--masses``: comma-separated amu, or a .npy/.npz file."""
    import os

    if text is None:
        return None
    if os.path.exists(text):
        from latentlab.data.dataset import _load_array

        return _load_array(text, "masses")
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"masses: could not parse {text!r}. Fix: write comma-separated numbers in amu, e.g. "
                         "--masses 12.011,1.008, or give a .npy file") from None
    if not values:
        raise ValueError("masses: is empty. Fix: write comma-separated numbers in amu, e.g. --masses 12.011,1.008")
    return values


def add_topology(ds) -> str:
    """Give a data set without bonds the bonds inferred from its masses and distances; returns what was done."""
    import numpy as np

    from latentlab.data.bonds import infer_bonds, rigid_groups, topology_from_bonds

    if ds.n_atoms < 2 or (ds.topology is not None and ds.topology.n_bonds):
        return "given" if ds.topology is not None else "none"
    guess = infer_bonds(ds.positions, ds.masses)
    if ds.topology is None:
        if not len(guess.bonds):
            return f"none (no bonds found: {guess.summary()})"
        ds.topology = topology_from_bonds(guess.elements, guess.bonds)
        how = f"inferred from masses and distances: {guess.summary()}"
    else:
        if not len(guess.bonds):
            return "given (without bonds; none found from distances)"
        atoms = list(ds.topology.atoms)
        for i, j in guess.bonds:
            ds.topology.add_bond(atoms[int(i)], atoms[int(j)])
        how = f"given, bonds inferred from masses and distances: {guess.summary()}"
    if ds.constraint_group is None and not ds.forces_aggregated and ds.forces is not None:
        groups = rigid_groups(ds.positions, np.asarray(guess.bonds), ds.masses)
        if groups is not None:
            ds.constraint_group = groups
            how += f"; {int((np.bincount(groups) > 1).sum())} groups held rigid by constraints (forces summed on them)"
    return how


def check_default_map(ds, spec: str | None) -> None:
    """Refuse a ``--default-map`` that cannot be built on this data set."""
    if spec is None:
        return
    if not spec.strip():
        raise ValueError("--default-map: is empty. Fix: give a map spec such as 'dihedrals:phi-psi' or "
                         "'distances:0-1', or leave the option out")
    try:
        ds.map(spec)
    except ValueError as err:
        raise ValueError(f"--default-map: {spec!r} cannot be built on this data set: {err}") from None


def run(args) -> int:
    import os

    from latentlab.data import load
    from latentlab.io import output_path

    if not os.path.exists(args.positions):
        raise FileNotFoundError(f"--positions: {args.positions} does not exist. Fix: check the path (built-in data "
                                "sets need no import: pass their name as DATA)")
    from latentlab.data.sniff import check_kind, file_kind

    if file_kind(args.positions) in ("directory", "empty", "unreadable", "hdf5", "hdf5-damaged", "latentlab-model",
                                     "latentlab-checkpoint", "torch-zip", "latentlab-simulation", "png", "zip", "pickle"):
        check_kind(args.positions, (), "--positions", "positions",
                   fix="pass positions (n_frames, n_atoms, 3) as .npy/.npz, or an mdtraj-readable trajectory")
    out = output_path(args.out, "data", overwrite=args.overwrite,
                      inputs=[args.positions, args.forces, args.energies, args.topology, args.time, args.masses])
    ds = load(args.positions, topology=args.topology, forces=args.forces, energies=args.energies,
              masses=parse_masses(args.masses), temperature=args.temperature, length_unit=args.length_unit,
              energy_unit=args.energy_unit, drop_nonfinite=args.drop_nonfinite, time=args.time, dt=args.dt,
              force_unit=args.force_unit)
    topology = add_topology(ds)
    check_default_map(ds, args.default_map)
    if args.default_map:
        ds.default_map = args.default_map
    check = "skipped (--no-check)" if args.no_check else "no forces"
    if ds.forces is not None and not args.no_check:
        from latentlab.data.checks import check_forces

        unit = args.force_unit or f"{args.energy_unit}/{args.length_unit}"
        energy, _, length = unit.rpartition("/")
        result = check_forces(ds, energy_unit=energy, length_unit=length, argument="--forces")
        if result is None:
            check = f"not run (only {ds.n_frames} frames; it needs 100)"
        elif not result.coordinates:
            check = "not run (no bonded atoms, and no neighbours that stay together)"
        else:
            check = (f"{result.verdict}: scale {result.scale:.3f} +- {result.scale_err:.3f} over "
                     f"{len(result.coordinates)} coordinates ({result.seconds:.1f} s)")
    ds.name = args.name or os.path.splitext(os.path.basename(out))[0]
    ds.metadata.update({"imported_from": os.path.abspath(args.positions), "length_unit_in": args.length_unit,
                        "energy_unit_in": args.energy_unit, "force_unit_in": args.force_unit or "",
                        "topology_source": topology, "force_check": check})
    ds.save(out)
    print(f"wrote {out}: {ds.n_frames} frames x {ds.n_atoms} atoms, forces: {ds.has_forces}, energies: {ds.has_energies}")
    print(f"  topology: {topology}")
    if ds.topology is not None and ds.topology.n_bonds:
        print("  dihedral maps over bonds of this topology get the rigid-rotation mean force (low noise)")
    print(f"  force check: {check}")
    dropped = int(ds.metadata.get("dropped_frames", 0))
    if ds.time is None:
        print("  no time axis (pass --dt PS or --time FILE to store one)" +
              (f"; {dropped} dropped frames are listed in the file" if dropped else ""))
    elif dropped:
        print(f"  dropped {dropped} frames with NaN/inf (gaps in the time axis)")
    return 0
