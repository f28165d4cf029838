"""``latentlab import``: convert users' arrays or trajectories into a latentlab data-set file."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert positions (+ forces) from .npy/.npz or any mdtraj trajectory into a latentlab .h5",
        description="Import positions (and forces, energies) into the latentlab HDF5 format, converting units and "
                    "refusing inconsistent input (shapes, lengths, NaN/inf frames, nm/Angstrom mix-ups).",
    )
    p.add_argument("--positions", required=True,
                   help="positions (n_frames, n_atoms, 3) as .npy/.npz, or any mdtraj-readable trajectory")
    p.add_argument("--forces", default=None, help="forces F = -grad U (n_frames, n_atoms, 3) as .npy/.npz, in ENERGY-UNIT/LENGTH-UNIT")
    p.add_argument("--energies", default=None, help="potential energies (n_frames,) as .npy/.npz, in ENERGY-UNIT")
    p.add_argument("--topology", default=None, help="topology (PDB) of exactly these atoms; gives masses if --masses is absent")
    p.add_argument("--masses", default=None, help="comma-separated masses in amu, one per atom (m1,m2,...)")
    p.add_argument("--temperature", type=float, required=True, help="K")
    p.add_argument("--length-unit", default="nm", choices=["nm", "angstrom"], help="unit of .npy positions and of forces (default nm)")
    p.add_argument("--energy-unit", default="kJ/mol", choices=["kJ/mol", "kcal/mol"], help="unit of energies and forces (default kJ/mol)")
    p.add_argument("--drop-nonfinite", action="store_true", help="drop frames containing NaN/inf instead of refusing them")
    p.add_argument("--default-map", default="", help="map spec stored as the data set's default (e.g. 'dihedrals:phi-psi')")
    p.add_argument("--name", default=None, help="data-set name (default: output file name)")
    p.add_argument("--out", required=True, help="output .h5 file (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=run)


def parse_masses(text: str | None):
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"masses: could not parse {text!r}. Fix: write comma-separated numbers in amu, e.g. --masses 12.011,1.008") from None


def run(args) -> int:
    import os

    from latentlab.data import load

    if os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"out: {args.out} exists. Fix: pass --overwrite or choose another --out")
    ds = load(args.positions, topology=args.topology, forces=args.forces, energies=args.energies,
              masses=parse_masses(args.masses), temperature=args.temperature, length_unit=args.length_unit,
              energy_unit=args.energy_unit, drop_nonfinite=args.drop_nonfinite)
    ds.name = args.name or os.path.splitext(os.path.basename(args.out))[0]
    if args.default_map:
        ds.default_map = args.default_map
    ds.metadata.update({"imported_from": os.path.abspath(args.positions), "length_unit_in": args.length_unit,
                        "energy_unit_in": args.energy_unit})
    ds.save(args.out)
    print(f"wrote {args.out}: {ds.n_frames} frames x {ds.n_atoms} atoms, forces: {ds.has_forces}, energies: {ds.has_energies}")
    return 0
