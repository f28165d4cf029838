"""Training benchmark: force-matching throughput vs the bare network, and wall time to a good model.

Prints a table and writes JSON (default ``benchmarks/results/bench_training.json``).
Usage::

    python benchmarks/bench_training.py [--data chignolin] [--device cpu|cuda] [--quick] [--out FILE]

1. **Throughput**, side by side in one run, on the same batch (default 256 frames) of the
   data set's force-matching targets and the default model (MLP 3 x 128, SiLU, float32):

   * ``bare``: the network alone, forward + backward of ``sum(V)`` w.r.t. the weights;
   * ``fm_step``: one force-matching step: forward, ``grad_Q V`` with ``create_graph``,
     the loss, backward through the gradient (double backprop), Adam, EMA update;
   * ``epoch``: frames/s of whole epochs of the :class:`latentlab.training.Trainer` (validation,
     checkpoint written every epoch, callback bookkeeping included).

2. **Wall time to ``ratio <= 1.5``** (JS divergence over the reference's own noise floor,
   :func:`latentlab.compare.compare_latent`): ``latentlab train`` defaults, then latent
   Langevin (500 walkers, 2 fs, gamma auto; 1500 steps = 3 ps of burn-in not used, because the
   walkers start on data frames), then chunks of 250 steps, comparing all records after the
   burn-in after each chunk until the ratio is reached; every second counts (target
   preparation, training, sampling, comparison).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch
from _common import timeit, write_results

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latentlab.compare import compare_latent  # noqa: E402
from latentlab.data import load  # noqa: E402
from latentlab.forces import prepare_targets  # noqa: E402
from latentlab.maps import build_mass_model  # noqa: E402
from latentlab.potentials import CGPotential  # noqa: E402
from latentlab.simulation import Simulation  # noqa: E402
from latentlab.training import ForceMatching, Trainer, force_matching_loss  # noqa: E402


def train_force_matching(ds, **kwargs):
    trainer = Trainer(ForceMatching(), **kwargs)
    trainer.fit(ds)
    return trainer.result_


def bench_throughput(ds, device: str, batch: int) -> dict:
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    cg_map = ds.map()
    Q, g = prepare_targets(ds, cg_map, build_mass_model(cg_map, ds.positions, ds.masses, consistency=False),
                           device=dev, dtype=torch.float32)
    torch.manual_seed(0)
    model = CGPotential.from_data(Q.double().cpu(), periodic=cg_map.periodic, temperature=ds.temperature).to(dev)
    ema = CGPotential.from_data(Q.double().cpu(), periodic=cg_map.periodic, temperature=ds.temperature).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scale = model.std.to(dev, torch.float32)
    idx = torch.arange(batch, device=dev)
    qb, gb = Q[idx], g[idx]
    feats = model.features(qb).detach()

    def bare():
        opt.zero_grad(set_to_none=True)
        model.net(feats).sum().backward()

    def fm_step():
        loss = force_matching_loss(model, qb, gb, scale, ds.kT)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 0.005)

    t_bare, t_fm = timeit(bare, sync=sync), timeit(fm_step, sync=sync)
    with tempfile.TemporaryDirectory() as tmp:
        res = train_force_matching(ds, epochs=6, device=device, out=os.path.join(tmp, "m.pt"), patience=0, refit=False)
    n_train = sum(b - a for a, b in res.model.training["frames"]["train"])
    epoch_s = float(np.median([h["seconds"] for h in res.history[1:]]))
    return {"batch": batch, "bare_ms": 1e3 * t_bare, "fm_step_ms": 1e3 * t_fm, "fm_over_bare": t_fm / t_bare,
            "bare_frames_per_s": batch / t_bare, "fm_frames_per_s": batch / t_fm,
            "epoch_s": epoch_s, "epoch_frames_per_s": n_train / epoch_s}


def bench_time_to_ratio(ds, device: str, target: float, walkers: int, max_steps: int, chunk: int = 250,
                        burn_in: int = 1500) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_force_matching(ds, device=device, out=os.path.join(tmp, "m.pt"))
    t_train = time.perf_counter() - t0
    cg_map = ds.map()
    ref = cg_map(torch.as_tensor(ds.positions, dtype=torch.float64)).numpy()
    sim = Simulation(result.model, n_walkers=walkers, device=device, seed=0)
    # Walkers start on data frames, so early samples look like the data whatever V is: only
    # samples after ``burn_in`` steps (3 ps, many relaxation times of the latent dynamics) count.
    sim.step(burn_in)
    records, steps, ratio, reached = [], burn_in, float("inf"), None
    history = []
    while steps < max_steps:
        for _ in range(chunk // 10):
            sim.step(10)
            records.append(sim.state.Q.detach().cpu().numpy())
        steps += chunk
        q = np.stack(records).reshape(-1, records[0].shape[-1])
        ratio = compare_latent(q, ref, names=cg_map.names, periodic=cg_map.periodic)["ratio"]
        history.append({"steps": steps, "seconds": time.perf_counter() - t0, "ratio": ratio})
        if reached is None and ratio <= target:
            reached = time.perf_counter() - t0
            break
    return {"target_ratio": target, "seconds_to_target": reached, "train_seconds": t_train,
            "epochs_run": result.epochs_run, "walkers": walkers, "burn_in_steps": burn_in, "steps": steps,
            "final_ratio": ratio,
            "gamma": sim.gamma, "history": history}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="chignolin", help="data set (default chignolin; alanine-dipeptide works too)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--target", type=float, default=1.5, help="ratio to reach (default 1.5)")
    parser.add_argument("--walkers", type=int, default=500)
    parser.add_argument("--max-steps", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="throughput only (a smoke run)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "bench_training.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ds = load(args.data)
    result = {"benchmark": "training", "data": ds.name, "frames": ds.n_frames, "map": ds.default_map,
              "device": args.device, "threads": args.threads, "torch": torch.__version__,
              "machine": platform.machine(), "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    thr = bench_throughput(ds, args.device, args.batch)
    result["throughput"] = thr
    print(f"{'what':34s} {'ms/batch':>9s} {'frames/s':>10s}")
    print(f"{'bare network fwd+bwd':34s} {thr['bare_ms']:9.2f} {thr['bare_frames_per_s']:10.0f}")
    print(f"{'force-matching step':34s} {thr['fm_step_ms']:9.2f} {thr['fm_frames_per_s']:10.0f}   "
          f"({thr['fm_over_bare']:.2f} x bare)")
    print(f"{'training epochs (all included)':34s} {'':9s} {thr['epoch_frames_per_s']:10.0f}   "
          f"({thr['epoch_s']:.2f} s per epoch)")
    if not args.quick:
        ttr = bench_time_to_ratio(ds, args.device, args.target, args.walkers, args.max_steps)
        result["time_to_ratio"] = ttr
        reached = f"{ttr['seconds_to_target']:.1f} s" if ttr["seconds_to_target"] is not None else "not reached"
        print(f"wall time to ratio <= {args.target} on {ds.name}: {reached} (training {ttr['train_seconds']:.1f} s, "
              f"{ttr['epochs_run']} epochs; {ttr['steps']} steps x {ttr['walkers']} walkers; ratio {ttr['final_ratio']:.2f})")
    write_results(result, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
