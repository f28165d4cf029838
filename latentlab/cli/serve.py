"""``latentlab serve``: the dashboard (Panel app in ``app/main.py``) on a local port, fully offline."""

from __future__ import annotations

import os


def app_path() -> str:
    """Path of the dashboard's ``panel serve`` entry point (``app/main.py`` next to the package)."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(here, "app", "main.py")


def _free_port(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the dashboard (Panel) and print its URL",
                       description="Start the latentlab dashboard on a local port: structure and atom picking, "
                                   "map consistency, training, live latent Langevin vs ground truth, "
                                   "reconstruction. Nothing is fetched from the internet.")
    p.add_argument("--port", type=int, default=5006, help="port (default 5006; 0 picks a free one)")
    p.add_argument("--data", default=None,
                   help="data set to open: a built-in name or a path (default chignolin, or alanine-dipeptide "
                        "while chignolin is not there)")
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--show", action="store_true", help="open a browser tab")
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from latentlab.validation import fail

    path = app_path()
    if not os.path.exists(path):
        fail("serve", f"the dashboard files are not next to the package ({path} is missing)",
             "install latentlab from its source tree with pip install -e \".[app]\"")
    if not 0 <= args.port < 65536:
        fail("--port", f"got {args.port}", "use a port in 0..65535")
    if args.data and args.data != "chignolin":  # chignolin falls back to alanine dipeptide with a message
        from latentlab.data import resolve

        resolve(args.data)  # fails early and clearly on a bad name or path
    # Bokeh's and Panel's own JS/CSS come from this server, never from a CDN.
    os.environ.setdefault("BOKEH_RESOURCES", "server")
    try:
        import panel as pn
    except ImportError:
        fail("serve", "Panel is not installed", "install the dashboard with pip install -e \".[app]\"")
    sys.path.insert(0, os.path.dirname(os.path.dirname(path)))
    from app.views import create_app

    pn.extension(notifications=False)
    port = args.port or _free_port(args.address)
    host = "localhost" if args.address in ("127.0.0.1", "0.0.0.0") else args.address
    server = pn.serve({"/": lambda: create_app(args.data)}, port=port, address=args.address, show=args.show,
                      start=False, title="latentlab", threaded=False,
                      websocket_origin=[f"{args.address}:{port}", f"localhost:{port}"])
    print(f"latentlab dashboard: http://{host}:{server.port}/", flush=True)
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    return 0
