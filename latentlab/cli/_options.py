"""Options that several commands share, spelled and defaulted the same way everywhere.

Each keyword of :func:`add_run_options` is the option's help text, ``True`` for the usual one, or
None to leave the option out.
"""

from __future__ import annotations

_USUAL = {
    "device": "cpu or cuda (default cpu)",
    "threads": "torch CPU threads (default 1)",
    "json": "print the result as JSON",
    "progress": "no progress bar",
}


def _text(value, key: str) -> str:
    return _USUAL[key] if value is True else value


def add_run_options(parser, *, device=None, threads=None, json=None, progress=None) -> None:
    """Add ``--device`` (default cpu), ``--threads`` (default 1), ``--json`` and ``--no-progress``, in that order."""
    if device is not None:
        parser.add_argument("--device", default="cpu", help=_text(device, "device"))
    if threads is not None:
        parser.add_argument("--threads", type=int, default=1, help=_text(threads, "threads"))
    if json is not None:
        parser.add_argument("--json", action="store_true", help=_text(json, "json"))
    if progress is not None:
        parser.add_argument("--no-progress", action="store_true", help=_text(progress, "progress"))


def add_dynamics_options(parser) -> None:
    """Add ``--dynamics`` and ``--friction-model`` (default: the model's, which calibration sets)."""
    parser.add_argument("--dynamics", default=None, choices=["langevin", "brownian"],
                        help="latent Langevin (inertia; default) or its overdamped limit, Brownian dynamics on "
                             "F = V + kT/2 ln det A (large frictions at large steps) (default: the model's)")
    parser.add_argument("--friction-model", default=None, choices=["coordinate", "atomic"],
                        help="friction -gamma dQ/dt with gamma in amu/ps (coordinate; default), or the same collision "
                             "rate gamma (1/ps) on every atom carried through the map: one friction per "
                             "eigen-direction of A, diffusion kT A / gamma (atomic) (default: the model's)")
