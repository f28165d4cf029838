"""``latentlab train DATA --out MODEL``: learn V(Q) by force matching (or the alternatives)."""

from __future__ import annotations

from latentlab.cli._data_args import add_data_arguments, load_data

import json

from latentlab.training.defaults import DEFAULTS


def register(sub) -> None:
    p = sub.add_parser("train", help="train a CG potential V(Q) by force matching",
                       description="Fit grad_Q V_theta to the frame-wise mean-force targets g(q) (THEORY.md section 3) "
                                   "with an MLP V_theta(Q); validation on held-out time blocks, Adam with cosine decay, "
                                   "early stopping, a checkpoint after every epoch (MODEL.ckpt, --resume continues from "
                                   "it). DATA is a built-in name (latentlab datasets) or a path.")
    add_data_arguments(p, help="built-in data set name or path (with forces)", block=False)
    p.add_argument("--map", dest="spec", default=None, help="map spec (default: the data set's default map)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (e.g. model.pt)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help=f"maximum epochs (default {DEFAULTS['epochs']})")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: CUDA when present)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, validation blocks and shuffling (default 0)")
    p.add_argument("--convention", default="consistent", choices=["consistent", "seed_eq9", "pmf"],
                   help="which V to learn: consistent (default; what latent Langevin needs), seed_eq9 (the seed's "
                        "eq. 9, biased), pmf (A_pmf itself, for plots)")
    p.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt after an interruption")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help=f"initial learning rate (default {DEFAULTS['lr']})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                   help=f"frames per batch (default {DEFAULTS['batch_size']})")
    p.add_argument("--hidden", default=",".join(str(h) for h in DEFAULTS["hidden"]),
                   help="hidden layer widths, comma-separated (default 128,128,128)")
    p.add_argument("--method", default="auto", choices=["auto", "mass-weighted", "pseudo-inverse", "rigid-rotation"],
                   help="mean-force estimator (all unbiased, they differ in noise): auto (default) = rigid-rotation "
                        "for dihedral maps when the topology allows it (rotate one side of each bond rigidly; much "
                        "less noise), else mass-weighted")
    p.add_argument("--val-fraction", type=float, default=DEFAULTS["val_fraction"],
                   help=f"fraction of time blocks held out (default {DEFAULTS['val_fraction']})")
    p.add_argument("--patience", type=int, default=DEFAULTS["patience"],
                   help=f"early stopping patience in epochs, 0 = off (default {DEFAULTS['patience']})")
    p.add_argument("--no-prior", action="store_true", help="no priors at all (walls and data support)")
    p.add_argument("--no-support-prior", action="store_true",
                   help="no data-support prior (keeps the walls); sampling is ~3x faster, sparse tails less accurate")
    p.add_argument("--frames", type=int, default=None, help="use only the first N frames")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small batched ops run fastest on one thread, and more "
                        "threads slow down badly when another job shares the cores)")
    p.add_argument("--objective", default="force-matching",
                   choices=["force-matching", "relative-entropy", "temperature-matching"],
                   help="force-matching (default); relative-entropy: fit the latent dynamics' marginal p(Q) to the "
                        "data's (KL), after force matching when DATA has forces (that model is kept as MODEL.fm.pt), "
                        "from configurations alone otherwise; temperature-matching: V(Q, T) from DATA plus --more-data "
                        "at other temperatures, with internal-energy matching (seed sec. 3.3)")
    p.add_argument("--more-data", nargs="+", default=[], metavar="DATA",
                   help="data sets at other temperatures for --objective temperature-matching "
                        "(e.g. alanine-dipeptide-350K alanine-dipeptide-400K)")
    p.add_argument("--iterations", type=int, default=300, help="relative-entropy updates (default 300)")
    p.add_argument("--estimator", default="auto", choices=["auto", "grid", "sampler"],
                   help="relative entropy's model average: grid (exact quadrature, n_cg <= 3), sampler (persistent "
                        "latent-Langevin walkers); auto (default) = grid when n_cg <= 3")
    p.add_argument("--re-lr", type=float, default=None,
                   help="relative-entropy learning rate (default 5e-3 grid from scratch, 5e-4 grid refining, "
                        "1e-4 sampler)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of text")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    import torch

    from latentlab.data import load
    from latentlab.training import train_force_matching
    from latentlab.validation import fail

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    except ValueError:
        fail("--hidden", f"got {args.hidden!r}", "give comma-separated integers, e.g. 128,128,128")
    ds = load_data(args)
    if args.frames is not None:
        if args.frames < 10:
            fail("--frames", f"got {args.frames}", "use at least 10 frames")
        ds = ds.select_frames(slice(0, args.frames))
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    if args.objective == "temperature-matching":
        from latentlab.training import train_temperature_matching

        if not args.more_data:
            fail("--more-data", "temperature matching needs data at two or more temperatures",
                 "add e.g. --more-data alanine-dipeptide-350K alanine-dipeptide-400K")
        result = train_temperature_matching([ds] + [load(d) for d in args.more_data], args.spec, epochs=args.epochs,
                                            lr=args.lr, batch_size=args.batch_size, hidden=hidden,
                                            convention=args.convention, method=args.method, device=args.device,
                                            seed=args.seed, val_fraction=args.val_fraction, patience=args.patience,
                                            out=args.out, resume=args.resume, progress=progress,
                                            callback=None if progress or args.json else _printer())
        return _report(args, result)
    relative_entropy = args.objective == "relative-entropy"
    start = None
    if ds.has_forces or not relative_entropy:
        # Before relative entropy the force-matching model is a file of its own (MODEL.fm.pt), so that
        # --resume finds it finished and each stage keeps its own checkpoint.
        fm_out = args.out + ".fm.pt" if relative_entropy else args.out
        start = train_force_matching(ds, args.spec, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                                     hidden=hidden, convention=args.convention, method=args.method, device=args.device,
                                     seed=args.seed, val_fraction=args.val_fraction, out=fm_out, resume=args.resume,
                                     progress=progress, patience=args.patience, prior=not args.no_prior,
                                     support_prior=not (args.no_prior or args.no_support_prior),
                                     callback=None if progress or args.json else _printer())
    if not relative_entropy:
        return _report(args, start)
    from latentlab.training import train_relative_entropy

    result = train_relative_entropy(ds, args.spec, model=None if start is None else start.model,
                                    iterations=args.iterations, estimator=args.estimator, lr=args.re_lr,
                                    hidden=hidden, device=args.device, seed=args.seed, out=args.out,
                                    resume=args.resume, progress=progress,
                                    callback=None if progress or args.json else _printer())
    return _report(args, result)


def _report(args, result) -> int:
    meta = result.model.metadata
    summary = {"out": result.path, "epochs_run": result.epochs_run, "stopped": result.stopped,
               "best_val_loss": result.best_val_loss, "seconds": result.seconds, "map": meta.get("map"),
               "convention": meta.get("convention"), "mass_model": meta.get("mass_model", {}).get("kind"),
               "consistency": meta.get("consistency"), "final": result.history[-1] if result.history else None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        cons = meta.get("consistency") or {}
        print(f"wrote {result.path}: {result.epochs_run} epochs ({result.stopped}), best validation loss "
              f"{result.best_val_loss:.5g}, {result.seconds:.1f} s; map {meta.get('map')}, A(Q) "
              f"{meta.get('mass_model', {}).get('kind')}"
              + (f", consistency score {cons['score']:.3g} ({cons.get('verdict')})" if 'score' in cons else ""))
    return 0


def _printer():
    """One line per epoch when there is no progress bar (logs, pipes)."""
    def callback(event):
        if event["event"] == "epoch":
            print(f"epoch {event['epoch']:4d}/{event['epochs']}  train {event['train_loss']:.5g}  "
                  f"val {event['val_loss']:.5g}  lr {event['lr']:.2g}  {event['seconds']:.2f} s", flush=True)
    return callback
