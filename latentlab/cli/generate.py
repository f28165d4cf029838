"""``latentlab generate SYSTEM --ns NS --out PATH``: all-atom data with OpenMM.

``--replicas R`` runs R independent replicas as Dask tasks (an in-process local
cluster by default, ``--scheduler ADDRESS`` for a running one) and merges them
into one data set with replica boundaries (latentlab.data.ensemble).
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "generate",
        help="run OpenMM and save positions, forces and energies (resumable)",
        description="Generate an all-atom reference data set with OpenMM (see latentlab.data.generate for the recipes).",
    )
    p.add_argument("system", metavar="SYSTEM", help="alanine-dipeptide | chignolin | protein (protein needs --pdb; chignolin too unless the built-in set exists)")
    p.add_argument("--ns", type=float, required=True, help="total simulated time in ns, per replica with --replicas (with --resume: the new total)")
    p.add_argument("--out", required=True, help="output HDF5 file (.h5 is added when there is no extension)")
    p.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    p.add_argument("--save-every", type=float, default=1.0, help="ps between saved frames (default 1)")
    p.add_argument("--allatom-every", type=float, default=None,
                   help="ps between all-atom frames when --select keeps a subset (default: 10 x --save-every)")
    p.add_argument("--select", default=None,
                   help="mdtraj selection of the atoms saved at every frame (default: preset; chignolin 'name CA'; 'all' for all)")
    p.add_argument("--pdb", default=None, help="starting structure (water and ions are stripped, hydrogens added)")
    p.add_argument("--platform", default="auto", choices=["auto", "CPU", "CUDA", "OpenCL", "Reference"],
                   help="OpenMM platform; auto = CUDA if present, else the faster of CPU and Reference")
    p.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (velocities and Langevin noise)")
    p.add_argument("--timestep", type=float, default=None, help="fs (default: preset, 1 for alanine-dipeptide, 4 with HMR)")
    p.add_argument("--constraints", choices=["none", "hbonds"], default=None, help="default: preset")
    p.add_argument("--hmr", type=float, default=None, metavar="AMU",
                   help="hydrogen mass for repartitioning (0 = off; default: preset, 4 for proteins)")
    p.add_argument("--friction", type=float, default=1.0, help="Langevin friction in 1/ps (default 1)")
    p.add_argument("--equilibrate", type=float, default=None, help="ps simulated and discarded before saving (default: preset)")
    p.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds of wall time between checkpoints (default 60)")
    p.add_argument("--resume", action="store_true", help="continue OUT.partial/ or extend a finished OUT to --ns")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT / OUT.partial/")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--name", default=None, help="data-set name stored in the file (default: file name)")
    p.add_argument("--start-from", default=None, metavar="DATA",
                   help="start from a frame of this data set of the same system (built-in name or file; all atoms) "
                        "instead of the preset structure")
    p.add_argument("--start-frame", type=int, default=None, metavar="I",
                   help="frame of --start-from for a single run (default: the last; negative counts from the end)")
    ens = p.add_argument_group("replica ensembles on Dask")
    ens.add_argument("--replicas", type=int, default=None, metavar="R",
                     help="run R independent replicas of --ns each (own seeds; with --start-from, replica r starts "
                          "from frame (r+1)*F//R-1) as Dask tasks and merge them into one data set with replica ids")
    ens.add_argument("--cluster", default=None, metavar="local[:N]",
                     help="in-process LocalCluster with N worker processes (default: one per core, or per --threads "
                          "cores, at most R)")
    ens.add_argument("--scheduler", default=None, metavar="ADDRESS",
                     help="use a running Dask cluster, e.g. tcp://HOST:8786 (workers need latentlab and a shared "
                          "file system for OUT.partial/)")
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from latentlab.data.generate import GenerateConfig, generate
    from latentlab.io import EXTENSIONS, output_path
    from latentlab.validation import fail

    if args.replicas is None and (args.cluster is not None or args.scheduler is not None):
        fail("--cluster" if args.cluster is not None else "--scheduler", "only applies to replica ensembles",
             "add --replicas R, or drop it for a single run")
    # the output policy of every command (canonical extension, never onto an input, directory checked first);
    # an existing OUT is refused unless --overwrite, or --resume, which extends it
    out = args.out if (not args.out or os.path.splitext(args.out)[1]) else args.out + EXTENSIONS["data"]
    if os.path.isfile(out) and not (args.overwrite or args.resume):
        fail("--out", f"{out} exists", "pass --resume to extend it, --overwrite to replace it, or choose another --out")
    inputs = [args.pdb]
    if args.start_from is not None:
        from latentlab.data import BUILTIN_FILES, builtin_path

        inputs.append(builtin_path(args.start_from) if args.start_from in BUILTIN_FILES else args.start_from)
    out = output_path(args.out, "data", overwrite=args.overwrite or args.resume, inputs=inputs)
    cfg = GenerateConfig(
        system=args.system, ns=args.ns, out=out, temperature=args.temperature, save_every_ps=args.save_every,
        allatom_every_ps=args.allatom_every, selection=args.select,
        pdb=args.pdb, platform=args.platform, threads=args.threads, seed=args.seed, timestep_fs=args.timestep,
        constraints=args.constraints, hydrogen_mass=args.hmr, friction=args.friction, equilibrate_ps=args.equilibrate,
        checkpoint_every_s=args.checkpoint_every, resume=args.resume, overwrite=args.overwrite,
        progress=not args.no_progress, name=args.name, start_from=args.start_from, start_frame=args.start_frame,
    )
    if args.replicas is None:
        generate(cfg)
    else:
        from latentlab.data.ensemble import generate_ensemble

        generate_ensemble(cfg, args.replicas, cluster=args.cluster, scheduler=args.scheduler)
    return 0
