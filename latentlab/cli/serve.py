"""``latentlab serve``: start the dashboard (the ``latentlab_app`` package) on a local port, fully offline.

The library never imports the dashboard: this command checks its arguments (a free port, a data set that
loads), finds the installed ``latentlab_app`` package and runs its server in a child process
(``python -m latentlab_app``), which prints the URL.
"""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the dashboard (Panel) and print its URL",
                       description="""
        Start the latentlab dashboard on a local port: structure and atom picking, map consistency, training,
        live latent Langevin vs ground truth, reconstruction. Nothing is fetched from the internet.""")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--data", default=None,
                   help="data set to open: a built-in name or a path (default chignolin, or alanine-dipeptide "
                        "while chignolin is not there)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.set_defaults(func=run)


def free_port(address: str, port: int) -> int:
    """``port`` if it can be bound on ``address`` (a free one for 0); a clear error otherwise."""
    import socket

    from latentlab.validation import fail

    if not 0 <= port < 65536:
        fail("--port", f"got {port}", "use a port in 0..65535 (0 picks a free one)")
    with socket.socket() as sock:
        try:
            sock.bind((address, port))
        except OSError as err:
            fail("--port", f"cannot listen on {address}:{port} ({err.strerror or err})",
                 "choose another port with --port (or --port 0 for a free one), or stop what uses it")
        return sock.getsockname()[1]


def run(args) -> int:
    import importlib.util
    import subprocess
    import sys

    from latentlab.validation import fail

    if importlib.util.find_spec("latentlab_app") is None:
        fail("serve", "the dashboard package latentlab_app is not installed", 'install it with pip install ".[app]"')
    if importlib.util.find_spec("panel") is None:
        fail("serve", "Panel is not installed", 'install the dashboard with pip install ".[app]"')
    port = free_port(args.address, args.port)
    if args.data and args.data != "chignolin":  # chignolin falls back to alanine dipeptide with a message
        from latentlab.data import load

        load(args.data)  # a bad name or an unreadable file fails here, clearly, not in a blank page
    command = [sys.executable, "-m", "latentlab_app", "--port", str(port), "--address", args.address]
    command += (["--data", args.data] if args.data else []) + (["--show"] if args.show else [])
    env = dict(os.environ, BOKEH_RESOURCES="server")
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
