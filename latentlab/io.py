"""Safe file output: nothing half-written is ever left under the final name."""

from __future__ import annotations

import contextlib
import os
import tempfile


@contextlib.contextmanager
def atomic_output(path: str, suffix: str | None = None):
    """Yield a temporary path next to ``path``; on success move it into place atomically.

    On any error the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{path}: the directory {directory} does not exist. Fix: create it or choose another path")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix or os.path.splitext(path)[1],
                               dir=directory)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


#: Canonical file extension of each kind of output (added when the user gives none).
EXTENSIONS = {"data": ".h5", "model": ".pt", "simulation": ".npz", "plot": ".png", "json": ".json", "flow": ".pt"}


def output_path(path, kind: str, *, overwrite: bool = False, inputs=(), argument: str = "--out") -> str:
    """Check an output path before any work is done, and return the path that will be written.

    The one output policy of every command:

    * no extension -> the canonical one for ``kind`` (:data:`EXTENSIONS`) is added;
    * the path must not be one of ``inputs`` (never write onto an input, whatever ``overwrite`` says);
    * an existing file is refused unless ``overwrite``;
    * the directory must exist and be writable.

    Parameters
    ----------
    path : str
    kind : {"data", "model", "simulation", "plot", "json", "flow"}
    overwrite : bool
    inputs : sequence of str
        Paths the command reads (compared after resolving links).
    argument : str
        Name of the option, for messages.
    """
    from latentlab.validation import fail

    if kind not in EXTENSIONS:
        fail("kind", f"unknown output kind {kind!r}", f"use one of {', '.join(EXTENSIONS)}")
    path = os.fspath(path)
    if not path or path.endswith(os.sep) or os.path.isdir(path):
        fail(argument, f"{path!r} is a directory, not a file name", f"give a file name, e.g. out{EXTENSIONS[kind]}")
    if not os.path.splitext(path)[1]:
        path += EXTENSIONS[kind]
    real = os.path.realpath(path)
    for item in inputs:
        if item is not None and os.path.exists(os.fspath(item)) and os.path.realpath(os.fspath(item)) == real:
            fail(argument, f"{path} is also an input of this command", "write the output to another file")
    if os.path.exists(path) and not overwrite:
        fail(argument, f"{path} already exists", "choose another name, or pass --overwrite to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        fail(argument, f"the directory {directory} does not exist", "create it first or choose another path")
    if not os.access(directory, os.W_OK | os.X_OK):
        fail(argument, f"the directory {directory} is not writable", "choose a directory you can write to")
    return path
