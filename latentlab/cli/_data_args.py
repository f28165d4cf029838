"""The DATA argument shared by every command that reads a data set.

DATA is a built-in name (``latentlab datasets``) or a path; trajectories and
bare ``.npy`` positions also need ``--topology`` and/or ``--temperature``.
Files are recognised by their content, so a model or SIM file, an empty or
damaged file given as DATA is refused with a message that says what it is.
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
    from latentlab.validation import check_positive, fail

    if args.temperature is not None:
        check_positive(args.temperature, "--temperature", "K")
    ds = load(args.data, topology=args.topology, temperature=args.temperature,
              block=getattr(args, "block", "primary"), lazy=getattr(args, "lazy", False))
    if _is_dataset_file(ds):  # it carries its own temperature and topology: never ignore an option silently
        if args.temperature is not None and abs(args.temperature - ds.temperature) > 1e-9:
            fail("--temperature", f"{args.data} is a data set sampled at {ds.temperature:g} K; --temperature only "
                 "describes trajectories and arrays", "leave --temperature out (or import the frames again)")
        if args.topology is not None:
            fail("--topology", f"{args.data} is a data set with its own topology (or none); --topology only describes "
                 "trajectories and arrays", "leave --topology out, or re-import the frames with latentlab import --topology")
    return ds


def _is_dataset_file(ds) -> bool:
    import os

    from latentlab.data.sniff import file_kind

    return bool(ds.source) and os.path.isfile(ds.source) and file_kind(ds.source) == "latentlab-data"


def map_spec(spec, ds, option: str = "--map") -> str:
    """The map spec a command uses: ``spec`` if given (refused when empty), else the data set's default map."""
    from latentlab.validation import fail

    if spec is None:
        if not ds.default_map:
            from latentlab.maps import suggested_map

            fail(option, f"the data set {ds.name!r} has no default map",
                 f"pass {option} SPEC, e.g. {option} '{suggested_map(ds.topology, ds.n_atoms)}'")
        return ds.default_map
    if not str(spec).strip():
        fail(option, "is empty", f"give a map spec such as 'distances:0-1', or leave {option} out to use the data "
             "set's default map")
    return spec


def output_file(path, kind: str, args, inputs=(), option: str = "--out") -> str:
    """:func:`latentlab.io.output_path` with the command's ``--overwrite`` and DATA/--topology as inputs."""
    from latentlab.io import output_path

    return output_path(path, kind, overwrite=getattr(args, "overwrite", False), argument=option,
                       inputs=[getattr(args, "data", None), getattr(args, "topology", None), *inputs])
