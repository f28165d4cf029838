"""``python -m latentlab_app [--port] [--address] [--data] [--show]``: the dashboard server (what ``latentlab serve`` runs).

Checks that the port is free and the data set loads before it starts, prints the URL, then serves
until Ctrl-C.  Nothing is fetched from the internet: Bokeh's and Panel's files come from this server.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="latentlab serve", description=__doc__)
    parser.add_argument("--port", type=int, default=5006)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--data", default=None)
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("BOKEH_RESOURCES", "server")
    import panel as pn

    from .views import create_app

    pn.extension(notifications=False)
    host = "localhost" if args.address in ("127.0.0.1", "0.0.0.0") else args.address
    server = pn.serve({"/": lambda: create_app(args.data)}, port=args.port, address=args.address, show=args.show,
                      start=False, title="latentlab", threaded=False,
                      websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}"])
    print(f"latentlab dashboard: http://{host}:{server.port}/", flush=True)
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
