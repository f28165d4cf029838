"""The DATA argument shared by every command that reads a data set.

DATA is a built-in name (``latentlab datasets``) or a path; trajectories and
bare ``.npy`` positions also need ``--topology`` and/or ``--temperature``.
"""

from __future__ import annotations


def add_data_arguments(parser, help: str = "built-in name (see `latentlab datasets`) or path",
                       block: bool = True) -> None:
    """Add ``DATA``, ``--topology``, ``--temperature`` (and ``--block``) to a sub-command parser."""
    parser.add_argument("data", metavar="DATA", help=help)
    parser.add_argument("--topology", default=None, help="topology for trajectories / .npy positions")
    parser.add_argument("--temperature", type=float, default=None, help="K, for trajectories / .npy positions")
    if block:
        parser.add_argument("--block", default="primary", choices=["primary", "allatom"],
                            help="which block of a latentlab file (allatom: chignolin's all-atom frames)")


def load_data(args):
    """Load the data set named by the arguments that :func:`add_data_arguments` added."""
    from latentlab.data import load

    return load(args.data, topology=args.topology, temperature=args.temperature,
                block=getattr(args, "block", "primary"))
