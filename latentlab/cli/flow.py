"""``latentlab flow train|sample|report``: coarse-graining without data (structured normalizing flows).

``flow train SYSTEM --out FLOW`` trains a flow on the potential alone (reverse
KL with tempering), checkpointing to ``FLOW.ckpt`` after every stage;
``--resume`` continues it bit for bit, Ctrl-C stops within a step and saves.
``flow sample FLOW --n N --out DATA`` writes a latentlab data set (positions,
forces, energies, importance weights) that every other command reads (``--no-forces``: without forces).
``flow report FLOW [--reference DATA] [--json] [--plot PNG]`` compares
reweighted state populations with exact or reference ones.
"""

from __future__ import annotations

SYSTEM_HELP = "double-well | gaussian-mixture | gaussian-mixture-20d | alanine-dipeptide"


def register(subparsers) -> None:
    p = subparsers.add_parser("flow", help="data-free CG: train, sample and check structured normalizing flows",
                              description="""
        Structured-latent normalizing flows trained on the potential alone (Stupp & Koutsourelakis, JCTC 2025);
        see docs/flows.md.""")
    sub = p.add_subparsers(dest="flow_command", metavar="ACTION")

    t = sub.add_parser("train", help="train a flow on a system's potential (no data)",
                       description="Reverse-KL training with tempering; checkpoints to FLOW.ckpt every stage.")
    t.add_argument("system", metavar="SYSTEM", help=SYSTEM_HELP)
    t.add_argument("--out", required=True, metavar="FLOW", help="flow file to write (.pt added without extension)")
    t.add_argument("--slow-dims", type=int, default=None, metavar="K", help="slow latent dimensions (default: the system's)")
    t.add_argument("--steps", type=int, default=None, help="optimiser steps per tempering stage (default: the system's)")
    t.add_argument("--initial-steps", type=int, default=None, help="steps of the first stage (default: the system's)")
    t.add_argument("--batch", type=int, default=None, help="samples per step (default: the system's)")
    t.add_argument("--tempering", choices=["adaptive", "linear", "none"], default="adaptive", help="beta schedule")
    t.add_argument("--beta0", type=float, default=None, help="initial beta as a fraction of 1/kT")
    t.add_argument("--delta-beta", type=float, default=None, help="largest (adaptive) or fixed (linear) beta step")
    t.add_argument("--delta-kl", type=float, default=None, help="largest relative KL increase per adaptive step")
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    t.add_argument("--n-weights", type=int, default=None, help="samples for tempering weights and the stage ESS")
    t.add_argument("--decoder", choices=["linear", "internal", "pseudo-atoms"], default=None,
                   help="molecules: internal coordinates (default) or the authors' pseudo-atom Cartesian map")
    t.add_argument("--fast-covariance", choices=["diagonal", "full"], default=None,
                   help="fast Gaussian: diagonal (the authors') or full (learned correlations); default: the system's")
    t.add_argument("--temperature", type=float, default=None, help="K (default: the system's)")
    t.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="training precision")
    t.add_argument("--seed", type=int, default=0, help="random seed")
    t.add_argument("--resume", action="store_true", help="continue FLOW.ckpt")
    t.add_argument("--overwrite", action="store_true", help="replace an existing FLOW (and FLOW.ckpt)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=run_train)

    s = sub.add_parser("sample", help="draw weighted samples into a latentlab data set",
                       description="One-shot samples with forces, energies and importance weights, as a data set.")
    s.add_argument("flow", metavar="FLOW", help="flow file")
    s.add_argument("--n", type=int, required=True, help="number of samples")
    s.add_argument("--out", required=True, metavar="DATA", help="data set to write (.h5 added without extension)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--batch", type=int, default=10000, help="samples per chunk")
    s.add_argument("--device", default="cpu", help="torch device")
    s.add_argument("--overwrite", action="store_true", help="replace an existing DATA")
    s.add_argument("--no-forces", action="store_true",
                   help="positions, energies and weights only (for training V by relative entropy, which needs no "
                        "forces: force matching through a flow map needs second derivatives of the flow per frame)")
    s.set_defaults(func=run_sample)

    r = sub.add_parser("report", help="reweighted populations vs exact/reference, ESS, bond score",
                       description="Reweighted state populations with standard errors against exact or reference values.")
    r.add_argument("flow", metavar="FLOW", help="flow file")
    r.add_argument("--reference", default=None, metavar="DATA",
                   help="reference data set (alanine dipeptide; default: the built-in one)")
    r.add_argument("--n", type=int, default=100000, help="samples to draw (default 100000)")
    r.add_argument("--seed", type=int, default=0, help="random seed")
    r.add_argument("--json", action="store_true", help="print JSON")
    r.add_argument("--plot", default=None, metavar="PNG", help="write a figure (free energy along the slow latent)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    r.set_defaults(func=run_report)
    p.set_defaults(func=lambda args: _no_action(p))


def _no_action(parser) -> int:
    parser.print_help()
    return 2


def _device(name: str):
    import torch

    from latentlab.validation import fail

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        fail("--device", f"got {name!r}", "use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail("--device", "CUDA is not available on this machine", "use --device cpu")
    return dev


def run_train(args) -> int:
    import os

    import torch

    from latentlab.flows import FlowTrainer, get_system, make_flow, save_flow, train_settings, trained_from_trainer
    from latentlab.io import output_path
    from latentlab.validation import fail

    torch.set_num_threads(max(1, torch.get_num_threads()))
    device = _device(args.device)
    system = get_system(args.system, args.temperature)
    out = output_path(args.out, "flow", overwrite=args.overwrite or args.resume)
    ckpt = out + ".ckpt"
    if args.resume:
        if not os.path.exists(ckpt):
            if os.path.exists(out):
                print(f"{out} is already trained (no checkpoint to resume)")
                return 0
            fail("--resume", f"there is no checkpoint {ckpt}", "train without --resume first")
    elif os.path.exists(ckpt):
        if not args.overwrite:
            fail("--out", f"an interrupted run exists in {ckpt}", "pass --resume to continue it, or --overwrite to start again")
        os.remove(ckpt)
    if args.slow_dims is not None and args.slow_dims < 1:
        fail("--slow-dims", f"got {args.slow_dims}", "pass at least 1")
    settings = train_settings(system, batch=args.batch, steps=args.steps, initial_steps=args.initial_steps,
                              tempering=args.tempering, beta0=args.beta0, delta_beta=args.delta_beta,
                              delta_kl=args.delta_kl, lr=args.lr, n_weights=args.n_weights, seed=args.seed)
    torch.manual_seed(args.seed)
    arch = {} if args.fast_covariance is None else {"fast_covariance": args.fast_covariance}
    flow = make_flow(system, args.slow_dims, decoder=args.decoder, **arch)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    trainer = FlowTrainer(flow, system, settings, checkpoint=ckpt, resume=args.resume, device=device, dtype=dtype,
                          progress=not args.no_progress)
    state = trainer.fit()
    if not state.finished:
        print(f"stopped after {state.total_steps} steps (stage {state.stage}, beta {state.lam:.4g}); "
              f"checkpoint {ckpt}; continue with --resume")
        return 130
    save_flow(out, trained_from_trainer(trainer))
    os.remove(ckpt)
    print(f"wrote {out}: {state.total_steps} steps in {len(trainer.history)} stages, {state.seconds:.1f} s, "
          f"ESS {state.ess_fraction:.3f} at beta = 1/kT")
    return 0


def run_sample(args) -> int:
    from latentlab.flows import load_flow
    from latentlab.io import output_path
    from latentlab.validation import fail

    if args.n < 1:
        fail("--n", f"got {args.n}", "ask for at least one sample")
    out = output_path(args.out, "data", overwrite=args.overwrite, inputs=[args.flow])
    trained = load_flow(args.flow, device=_device(args.device))
    samples = trained.sample(args.n, forces=not args.no_forces, seed=args.seed, batch=args.batch)
    ds = samples.to_dataset(trained.system, name=f"flow samples of {trained.system.name}",
                            metadata={"flow": str(args.flow), "seed": int(args.seed)})
    ds.save(out)
    print(f"wrote {out}: {ds.n_frames} frames, ESS {samples.ess_fraction:.3f} of {samples.n_samples}")
    return 0


def run_report(args) -> int:
    import json

    from latentlab.flows import flow_report, load_flow
    from latentlab.flows.report import plot_report
    from latentlab.io import output_path
    from latentlab.validation import fail

    if args.n < 2:
        fail("--n", f"got {args.n}", "ask for at least 2 samples")
    plot = None if args.plot is None else output_path(args.plot, "plot", overwrite=args.overwrite,
                                                      inputs=[args.flow, args.reference], argument="--plot")
    trained = load_flow(args.flow)
    reference = None
    if args.reference is not None:
        from latentlab.data import load

        reference = load(args.reference)
    samples = trained.sample(args.n, seed=args.seed)
    report = flow_report(trained, reference=reference, samples=samples)
    if plot is not None:
        plot_report(trained, samples, plot, reference=reference)
        report["plot"] = plot
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{report['system']} at {report['temperature']:.2f} K, {report['slow_dims']} slow dims: "
          f"ESS {report['ess_fraction']:.3f} of {report['n_samples']} samples; trained {report['steps']} steps, "
          f"batch {report['batch']}, {report['train_seconds']:.1f} s")
    for name, e in report["populations"].items():
        key = "exact" if "exact" in e else ("reference" if "reference" in e else None)
        target = "" if key is None else f"   {key} {e[key]:.5f}" + (
            f" +- {e['reference_stderr']:.5f}" if key == "reference" else "") + f"   z {e['z']:+.2f}"
        print(f"  {name:<8} {e['value']:.5f} +- {e['stderr']:.5f}{target}")
    if "bond_score" in report:
        print(f"  bond score {report['bond_score']:.4f}")
    if "corr_z_x1" in report:
        print(f"  corr(z, x1) {report['corr_z_x1']:+.4f}")
    if plot is not None:
        print(f"wrote {plot}")
    return 0
