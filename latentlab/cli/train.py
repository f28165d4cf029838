"""``latentlab train DATA --out MODEL``: learn V(Q) by force matching (or the alternatives)."""

from __future__ import annotations

import json

from latentlab.cli._data_args import add_data_arguments, load_data, map_spec
from latentlab.cli._options import add_run_options
from latentlab.training.defaults import DEFAULTS


def register(sub) -> None:
    p = sub.add_parser("train", help="train a CG potential V(Q) by force matching",
                       description="""
        Fit grad_Q V_theta to the frame-wise mean-force targets g(q) (docs/theory.md section 3) with an MLP
        V_theta(Q); validation on held-out time blocks, Adam with cosine decay, early stopping, a checkpoint
        after every epoch (MODEL.ckpt, --resume continues from it). DATA is a built-in name (latentlab datasets)
        or a path.""")
    add_data_arguments(p, help="built-in data set name or path (with forces)", block=False)
    p.add_argument("--map", dest="spec", default=None, help="map spec (default: the data set's default map)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt is added when no extension is given)")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists (it is refused otherwise)")
    p.add_argument("--holdout", type=float, default=0.0,
                   help="fraction of every trajectory (its end) kept out of training, validation and refit, for "
                        "scoring with 'latentlab compare' (default 0)")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                   help=f"maximum epochs of force or temperature matching (default {DEFAULTS['epochs']}; the "
                        "relative-entropy refinement takes --iterations)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto: CUDA when present)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, validation blocks and shuffling (default 0)")
    p.add_argument("--convention", default="consistent", choices=["consistent", "eq9", "pmf", "seed_eq9"],
                   help="which V to learn: consistent (default; what latent Langevin needs), eq9 (eq. 9 of Bruce et al., "
                        "biased; the old name seed_eq9 still works), pmf (A_pmf itself, for plots)")
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
    p.add_argument("--lazy", action="store_true",
                   help="read positions and forces from DATA (a latentlab .h5) in blocks instead of loading them: "
                        "data sets larger than memory; the same model")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: small batched ops run fastest on one thread, and more "
                        "threads slow down badly when another job shares the cores)")
    p.add_argument("--objective", default="auto",
                   choices=["auto", "force-matching", "relative-entropy", "temperature-matching"],
                   help="auto (default): force matching, then relative-entropy refinement on the exact grid when the "
                        "map has at most 3 coordinates and V is the consistent one (held-out JS ratio, 5 seeds: "
                        "chignolin 0.63 -> 0.46, alanine dipeptide 0.28 -> 0.28), else force matching alone; "
                        "force-matching: that alone (faster); relative-entropy: fit the latent dynamics' marginal p(Q) to the "
                        "data's (KL), after force matching when DATA has forces (that model is kept as MODEL.fm.pt), "
                        "from configurations alone otherwise; temperature-matching: V(Q, T) from DATA plus --more-data "
                        "at other temperatures, with internal-energy matching (sec. 3.3 of Bruce et al.)")
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
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over the processes of a torchrun launch (torchrun --nproc-per-node N -m latentlab "
                        "train ... --distributed; gloo on CPU, NCCL on CUDA): the same steps as one process with the "
                        "same global batch; rank 0 writes the model and checkpoints")
    add_run_options(p, json="print a JSON summary instead of text", progress=True)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys
    import warnings

    import torch

    from latentlab.conventions import canonical
    from latentlab.data import load
    from latentlab.io import output_path
    from latentlab.training import ForceMatching, RelativeEntropy, TemperatureMatching, Trainer
    from latentlab.validation import fail

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        hidden = [int(h) for h in str(args.hidden).split(",") if h.strip()]
    except ValueError:
        fail("--hidden", f"got {args.hidden!r}", "give comma-separated integers, e.g. 128,128,128")
    if args.convention == "seed_eq9":
        print("latentlab train: note: the convention name seed_eq9 is deprecated; use eq9", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        convention = canonical(args.convention)
    out = output_path(args.out, "model", overwrite=args.overwrite or args.resume, inputs=[args.data, *args.more_data])
    ds = load_data(args)
    if args.frames is not None:
        if args.frames < 10:
            fail("--frames", f"got {args.frames}", "use at least 10 frames")
        ds = ds.select_frames(slice(0, args.frames))
    cg_map = ds.map(map_spec(args.spec, ds))
    progress = not args.no_progress and not args.json and sys.stderr.isatty()
    common = dict(hidden=hidden, seed=args.seed, device=args.device, val_fraction=args.val_fraction,
                  holdout=args.holdout, resume=args.resume, progress=progress,
                  callback=None if args.json else _printer(progress), distributed=args.distributed)
    if args.objective == "temperature-matching":
        if not args.more_data:
            fail("--more-data", "temperature matching needs data at two or more temperatures",
                 "add e.g. --more-data alanine-dipeptide-350K alanine-dipeptide-400K")
        trainer = Trainer(TemperatureMatching(convention=convention, method=args.method), epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, patience=args.patience, prior=not args.no_prior, out=out, **common)
        trainer.fit([ds] + [load(d) for d in args.more_data], cg_map)
        return _report(args, trainer.result_)
    relative_entropy = args.objective == "relative-entropy" or (
        args.objective == "auto" and ds.has_forces and cg_map.n_cg <= 3 and convention == "consistent"
        and not args.distributed)
    start = None
    if ds.has_forces or not relative_entropy:
        # Before relative entropy the force-matching model is a file of its own (MODEL.fm.pt), so that
        # --resume finds it finished and each stage keeps its own checkpoint.
        fm_out = output_path(out + ".fm.pt", "model", overwrite=args.overwrite or args.resume) if relative_entropy else out
        trainer = Trainer(ForceMatching(convention=convention, method=args.method), epochs=args.epochs, lr=args.lr,
                          batch_size=args.batch_size, patience=args.patience, prior=not args.no_prior,
                          support_prior=not args.no_support_prior, out=fm_out, **common)
        start = trainer.fit(ds, cg_map)
        if not relative_entropy:
            return _report(args, trainer.result_)
        earlier = [trainer.result_]
    else:
        earlier = []
    estimator = "grid" if args.objective == "auto" else args.estimator
    trainer = Trainer(RelativeEntropy(estimator=estimator, start=start), epochs=args.iterations, lr=args.re_lr,
                      out=out, **common)
    trainer.fit(ds, cg_map)
    return _report(args, trainer.result_, earlier)


def _stage(result) -> dict:
    """One training stage in the summary: its objective, epochs (of which refitting on all frames), why it stopped."""
    refit = sum(1 for h in result.history if h.get("phase") == "refit")
    return {"objective": result.model.training.get("kind"), "epochs_run": result.epochs_run, "refit_epochs": refit,
            "stopped": result.stopped, "best_val_loss": result.best_val_loss, "seconds": result.seconds}


def _stage_text(stage: dict) -> str:
    n, refit = stage["epochs_run"] - stage["refit_epochs"], stage["refit_epochs"]
    unit = "update" if stage["objective"] == "relative-entropy" else "epoch"
    text = f"{stage['objective']} {n} {unit}{'' if n == 1 else 's'}"
    if refit:
        text += f" + {refit} refitting on all frames"
    return text + f" ({stage['stopped']})"


def _report(args, result, earlier=()) -> int:
    """Print what was written: every stage (force matching, then relative entropy for ``--objective auto``)."""
    if result.path is None and getattr(args, "distributed", False):
        return 0  # not rank 0: rank 0 reports
    model = result.model
    t = model.training
    stages = [_stage(r) for r in [*earlier, result]]
    seconds = sum(s["seconds"] for s in stages)
    summary = {"out": result.path, "epochs_run": result.epochs_run, "stopped": result.stopped,
               "best_val_loss": result.best_val_loss, "seconds": seconds, "map": model.map_spec,
               "convention": model.convention, "method": t.get("method"), "method_reason": t.get("method_reason"),
               "mass_model": model.mass.kind, "consistency": model.consistency, "frames": t.get("frames"),
               "final": result.history[-1] if result.history else None, "stages": stages}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        cons = model.consistency or {}
        print(f"wrote {result.path}: {', then '.join(_stage_text(s) for s in stages)}, best validation loss "
              f"{result.best_val_loss:.5g}, {seconds:.1f} s; map {model.map_spec}, A(Q) {model.mass.kind}"
              + (f", consistency score {cons['score']:.3g} ({cons.get('verdict')})" if "score" in cons else ""))
    return 0


def _printer(progress: bool):
    """Messages always (a note once, though every training stage sends it); one line per epoch when there is no
    progress bar (logs, pipes)."""
    notes = set()
    last_phase = None

    def callback(event):
        nonlocal last_phase
        if event["event"] == "message":
            text = event["message"]
            if text.startswith("note:"):
                if text in notes:
                    return
                notes.add(text)
            print(text, flush=True)
        elif event["event"] == "epoch" and not progress:
            refit = event.get("phase") == "refit"
            if refit and last_phase != "refit":
                n = event["epochs"] - event["epoch"] + 1
                print(f"refitting on all frames (validation blocks included) for {n} epoch{'s' * (n != 1)}, "
                      "the best count on validation", flush=True)
            last_phase = event.get("phase")
            print(f"epoch {event['epoch']:4d}/{event['epochs']}  train {event['train_loss']:.5g}  "
                  f"val {event['val_loss']:.5g}  lr {event['lr']:.2g}  {event['seconds']:.2f} s"
                  + ("  (refit)" if refit else ""), flush=True)
    return callback
