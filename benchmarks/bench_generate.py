"""Generation speed: ``latentlab generate`` vs bare OpenMM on the same system and platform.

Bare OpenMM = the same System, integrator and platform, ``integrator.step(n)``
with no output at all.  ``latentlab generate`` = the full command path
(``Generator``: saving positions, forces and energies every ``--save-every``,
checkpoints, progress bar), timed two ways: the steady-state simulation loop
(what ns/day the progress bar shows) and the whole call including setup,
equilibration-free start and writing the HDF5 file.  Runs alternate
(bare, latentlab, bare, latentlab, ...) and the best of each is reported.

Replica scaling (``--scaling``): R replicas on R local Dask workers
(``latentlab generate --replicas R --cluster local:R``, one OpenMM thread per
worker) against one replica on one worker, alternated side by side in one run.
Aggregate ns/day is reported two ways: *loop* = simulated ns of all replicas /
(last loop end - first loop start), the steady state; *call* = simulated ns /
wall time of the whole call (cluster start, system set-up, equilibration-free
start, merge).  Target: 2 replicas on 2 workers >= 1.7x one replica on one
worker.  The machine's 1-minute load average is recorded before and after each
measurement, and the share of a core each worker process got during its loop
(process CPU time / wall time): on a shared machine a share below ~0.95 means
other jobs took cores and the ratio understates the scaling.

Usage::

    python benchmarks/bench_generate.py [--systems alanine-dipeptide chignolin] [--ps 20] [--repeats 2]
    python benchmarks/bench_generate.py --scaling [--systems alanine-dipeptide] [--ps 1000] [--repeats 3] [--replicas 2]

Prints a table and writes ``benchmarks/results/bench_generate.json``
(``bench_generate_scaling.json`` with ``--scaling``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

from _common import write_results

HERE = os.path.dirname(os.path.abspath(__file__))

# Per system: simulated ps per timing run and the save interval used by the built-in recipe.
DEFAULTS = {
    "alanine-dipeptide": dict(ps=2000.0, save_every=8.0, platform="Reference", pdb=None),
    "chignolin": dict(ps=20.0, save_every=0.5, platform="CPU", pdb=None)  # the built-in topology,
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


# Per system: simulated ps per replica in one scaling measurement (about 30-60 s of loop on one 2-GHz core).
SCALING_PS = {"alanine-dipeptide": 1600.0, "chignolin": 40.0}


def ensemble_run(cfg, replicas: int) -> dict:
    """Aggregate ns/day of ``replicas`` replicas on as many local Dask workers (see module docstring)."""
    from latentlab.data.ensemble import Ensemble

    load_before = os.getloadavg()[0]
    ens = Ensemble(cfg, replicas, cluster=f"local:{replicas}", log=lambda *a: None)
    ens.run()
    load_after = os.getloadavg()[0]
    res = ens.results
    ns = sum(r["frames_this_run"] for r in res) * cfg.save_every_ps / 1000.0
    span = max(r["loop_end"] for r in res) - min(r["loop_start"] for r in res)
    return {"replicas": replicas, "workers": replicas, "simulated_ns": ns, "loop_span_s": span, "wall_s": ens.wall_seconds,
            "loop_ns_per_day": ns / span * 86400.0, "call_ns_per_day": ns / ens.wall_seconds * 86400.0,
            "per_replica_loop_ns_per_day": [r["ns_per_day"] for r in res], "platforms": sorted({r["platform"] for r in res}),
            # share of a core each replica's worker got during its loop: < 1 means other processes took CPU
            "cpu_share": [r["loop_cpu_seconds"] / max(r["loop_seconds"], 1e-9) for r in res],
            "load_before": load_before, "load_after": load_after}


def _present(names):
    """``(name, DEFAULTS[name])`` of each system whose PDB is here (the others are skipped with a note)."""
    for name in names:
        d = DEFAULTS[name]
        if d["pdb"] and not os.path.exists(d["pdb"]):
            print(f"skip {name}: {d['pdb']} not found", file=sys.stderr)
            continue
        yield name, d


def _write(out: str, **content) -> None:
    """Write the machine, the OpenMM version and ``content`` as JSON to ``out``."""
    import openmm

    write_results({"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                   "openmm": openmm.__version__, **content}, out, indent=1)
    print(f"wrote {out}")


def scaling(args) -> int:
    from latentlab.data.generate import GenerateConfig

    rows = []
    for name, d in _present(args.systems):
        ps = args.ps or SCALING_PS[name]
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for rep in range(args.repeats):
                for replicas in (1, args.replicas):  # alternated: the same machine state for both
                    cfg = GenerateConfig(system=name, ns=ps / 1000.0, out=os.path.join(tmp, f"s{rep}-{replicas}.h5"),
                                         save_every_ps=d["save_every"], pdb=d["pdb"], platform=d["platform"], threads=1,
                                         equilibrate_ps=0.0, progress=False, checkpoint_every_s=60.0)
                    r = ensemble_run(cfg, replicas)
                    r.update(system=name, repeat=rep, simulated_ps_per_replica=ps)
                    runs.append(r)
                    print(f"  {name} repeat {rep}: {replicas} replica(s) on {replicas} worker(s): loop {r['loop_ns_per_day']:.1f} "
                          f"ns/day, call {r['call_ns_per_day']:.1f} ns/day, load {r['load_before']:.2f} -> {r['load_after']:.2f}, "
                          f"core share per worker {', '.join(f'{c:.2f}' for c in r['cpu_share'])}", flush=True)
        for rep in range(args.repeats):
            one = next(r for r in runs if r["repeat"] == rep and r["replicas"] == 1)
            many = next(r for r in runs if r["repeat"] == rep and r["replicas"] == args.replicas)
            rows.append({"system": name, "repeat": rep, "platform": ",".join(many["platforms"]),
                         "one_loop_ns_per_day": one["loop_ns_per_day"], "many_loop_ns_per_day": many["loop_ns_per_day"],
                         "loop_ratio": many["loop_ns_per_day"] / one["loop_ns_per_day"],
                         "one_call_ns_per_day": one["call_ns_per_day"], "many_call_ns_per_day": many["call_ns_per_day"],
                         "call_ratio": many["call_ns_per_day"] / one["call_ns_per_day"],
                         "max_load": max(one["load_before"], one["load_after"], many["load_before"], many["load_after"]),
                         "min_cpu_share": min(one["cpu_share"] + many["cpu_share"])})
    print(f"\n{'system':<18} {'rep':>3} {'platform':<10} {'1x1 loop':>9} {f'{args.replicas}x{args.replicas} loop':>10} {'ratio':>6} "
          f"{'1x1 call':>9} {f'{args.replicas}x{args.replicas} call':>10} {'ratio':>6} {'max load':>8} {'min share':>9}")
    for r in rows:
        print(f"{r['system']:<18} {r['repeat']:>3} {r['platform']:<10} {r['one_loop_ns_per_day']:>9.1f} {r['many_loop_ns_per_day']:>10.1f} "
              f"{r['loop_ratio']:>6.2f} {r['one_call_ns_per_day']:>9.1f} {r['many_call_ns_per_day']:>10.1f} {r['call_ratio']:>6.2f} "
              f"{r['max_load']:>8.2f} {r['min_cpu_share']:>9.2f}")
    out = args.out or os.path.join(HERE, "results", "bench_generate_scaling.json")
    _write(out, replicas=args.replicas, target_loop_ratio=1.7, results=rows, runs=runs)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=None, choices=list(DEFAULTS),
                        help="default: all (overhead), alanine-dipeptide (--scaling)")
    parser.add_argument("--ps", type=float, default=None, help="simulated ps per timing run and replica (default: per system)")
    parser.add_argument("--repeats", type=int, default=None, help="default: 2 (overhead), 3 (--scaling)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--scaling", action="store_true", help="replica ensembles: R replicas on R workers vs 1 on 1")
    parser.add_argument("--replicas", type=int, default=2, help="R for --scaling (default 2)")
    parser.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/bench_generate[_scaling].json)")
    args = parser.parse_args(argv)
    if args.scaling:
        args.systems = args.systems or ["alanine-dipeptide"]
        args.repeats = args.repeats or 3
        return scaling(args)
    args.systems = args.systems or list(DEFAULTS)
    args.repeats = args.repeats or 2
    args.out = args.out or os.path.join(HERE, "results", "bench_generate.json")

    from latentlab.data.generate import GenerateConfig

    rows = []
    for name, d in _present(args.systems):
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
    _write(args.out, target_ratio=0.9, results=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
