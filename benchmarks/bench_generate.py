"""Generation speed: ``latentlab generate`` vs bare OpenMM on the same system and platform.

Bare OpenMM = the same System, integrator and platform, ``integrator.step(n)``
with no output at all.  ``latentlab generate`` = the full command path
(``Generator``: saving positions, forces and energies every ``--save-every``,
checkpoints, progress bar), timed two ways: the steady-state simulation loop
(what ns/day the progress bar shows) and the whole call including setup,
equilibration-free start and writing the HDF5 file.  Runs alternate
(bare, latentlab, bare, latentlab, ...) and the best of each is reported.

Usage::

    python benchmarks/bench_generate.py [--systems alanine-dipeptide chignolin] [--ps 20] [--repeats 2]

Prints a table and writes ``benchmarks/results/bench_generate.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHIGNOLIN_PDB = "/work/shared/data/1uao.pdb"

# Per system: simulated ps per timing run and the save interval used by the built-in recipe.
DEFAULTS = {
    "alanine-dipeptide": dict(ps=2000.0, save_every=8.0, platform="Reference", pdb=None),
    "chignolin": dict(ps=20.0, save_every=0.5, platform="CPU", pdb=CHIGNOLIN_PDB),
}


def bare_openmm(cfg, n_steps: int) -> float:
    """ns/day of integrator.step(n_steps) on the same System/platform."""
    import openmm
    import openmm.unit as u

    from latentlab.data.generate import build_system, make_platform

    topology, positions, system, _ = build_system(cfg)

    def factory():
        return openmm.LangevinMiddleIntegrator(cfg.temperature * u.kelvin, cfg.friction / u.picosecond,
                                               cfg.timestep_fs * u.femtosecond)

    plat, props = make_platform(cfg.platform, cfg.threads, system, factory, positions)
    integ = factory()
    integ.setRandomNumberSeed(1)
    ctx = openmm.Context(system, integ, plat, props)
    ctx.setPositions(positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 0)
    ctx.setVelocitiesToTemperature(cfg.temperature * u.kelvin, 1)
    integ.step(min(1000, n_steps))
    t0 = time.perf_counter()
    integ.step(n_steps)
    dt = time.perf_counter() - t0
    return n_steps * cfg.timestep_fs * 1e-6 / dt * 86400.0


def latentlab_run(cfg) -> tuple[float, float]:
    """(loop ns/day, whole-call ns/day) of the latentlab Generator."""
    from latentlab.data.generate import Generator

    gen = Generator(cfg, log=lambda *a: None)
    t0 = time.perf_counter()
    gen.run()
    total = time.perf_counter() - t0
    return gen.ns_per_day, cfg.ns / total * 86400.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=list(DEFAULTS), choices=list(DEFAULTS))
    parser.add_argument("--ps", type=float, default=None, help="simulated ps per timing run (default: per system)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench_generate.json"))
    args = parser.parse_args(argv)

    import openmm

    from latentlab.data.generate import GenerateConfig

    rows = []
    for name in args.systems:
        d = DEFAULTS[name]
        if d["pdb"] and not os.path.exists(d["pdb"]):
            print(f"skip {name}: {d['pdb']} not found", file=sys.stderr)
            continue
        ps = args.ps or d["ps"]
        best_bare, best_loop, best_call = 0.0, 0.0, 0.0
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.repeats):
                cfg = GenerateConfig(system=name, ns=ps / 1000.0, out=os.path.join(tmp, f"b{rep}.h5"),
                                     save_every_ps=d["save_every"], allatom_every_ps=None if name != "chignolin" else 10 * d["save_every"],
                                     pdb=d["pdb"], platform=d["platform"], threads=args.threads, equilibrate_ps=0.0,
                                     progress=True, checkpoint_every_s=60.0).resolved()
                best_bare = max(best_bare, bare_openmm(cfg, int(round(ps * 1000.0 / cfg.timestep_fs))))
                loop, call = latentlab_run(cfg)
                best_loop, best_call = max(best_loop, loop), max(best_call, call)
        rows.append({"system": name, "platform": d["platform"], "threads": args.threads, "simulated_ps": ps,
                     "timestep_fs": cfg.timestep_fs, "save_every_ps": d["save_every"],
                     "bare_openmm_ns_per_day": best_bare, "latentlab_loop_ns_per_day": best_loop,
                     "latentlab_call_ns_per_day": best_call, "loop_ratio": best_loop / best_bare,
                     "call_ratio": best_call / best_bare})
    print(f"{'system':<20} {'platform':<10} {'bare ns/day':>12} {'latentlab loop':>15} {'ratio':>6} {'whole call':>11} {'ratio':>6}")
    for r in rows:
        print(f"{r['system']:<20} {r['platform']:<10} {r['bare_openmm_ns_per_day']:>12.1f} {r['latentlab_loop_ns_per_day']:>15.1f} "
              f"{r['loop_ratio']:>6.1%} {r['latentlab_call_ns_per_day']:>11.1f} {r['call_ratio']:>6.1%}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                   "openmm": openmm.__version__, "target_ratio": 0.9, "results": rows}, fh, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
