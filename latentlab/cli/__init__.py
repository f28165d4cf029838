"""The ``latentlab`` command line.

Each sub-command lives in its own module of this package and defines
``register(subparsers)``, which adds its parser and sets ``func`` to a
function ``(args) -> int``.  Modules are found automatically, so adding a
command means adding a module.  Heavy imports (torch, OpenMM) happen inside
the command functions so that ``latentlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentlab",
        description="Machine-learned coarse-graining: CG maps, effective masses, force matching, latent Langevin dynamics.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        try:
            module = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as err:  # one broken command (e.g. a missing optional dependency) must not break the others
            _broken(sub, info.name, err)
            continue
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _broken(sub, name: str, err: Exception) -> None:
    """Register ``name`` as a command that explains why it cannot run."""
    p = sub.add_parser(name, help=f"(unavailable: {type(err).__name__})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def run(args):
        raise ValueError(f"the {name} command could not be loaded ({type(err).__name__}: {err}). "
                         "Fix: reinstall latentlab with its dependencies (pip install latentlab)")

    p.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("latentlab"))
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        # User errors: one clear line, no traceback.
        print(f"latentlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"latentlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
