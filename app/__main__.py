"""``python -m latentlab_app [--port] [--address] [--data] [--workers] [--show]``: the dashboard server (what ``latentlab serve`` runs).

Checks that the port is free and the data set loads before it starts, prints the URL, then serves
until Ctrl-C.  Nothing is fetched from the internet: Bokeh's and Panel's files come from this server.
Training, simulations and consistency checks run in worker processes, at most ``--workers`` at once
(default: the number of cores, or ``$LATENTLAB_WORKERS``); the others wait in a queue.
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
    parser.add_argument("--workers", type=int, default=None, help="jobs run at once (default: the number of cores)")
    parser.add_argument("--show", action="store_true")
    args = parser.parse_args(argv)
    if args.workers is not None:
        if args.workers < 1:
            parser.error(f"--workers: got {args.workers}. Fix: use 1 or more")
        os.environ["LATENTLAB_WORKERS"] = str(args.workers)
    os.environ.setdefault("BOKEH_RESOURCES", "server")
    import panel as pn

    from .jobs import default_queue
    from .views import create_app

    queue = default_queue()
    queue.warm_up()  # the fork server imports torch and the library while the page loads
    pn.extension(notifications=False)
    host = "localhost" if args.address in ("127.0.0.1", "0.0.0.0") else args.address
    # A closed tab is noticed by its own session within a tick (latentlab_app.views.Dashboard), which asks
    # Bokeh to discard it; checking every second makes that quick.
    server = pn.serve({"/": lambda: create_app(args.data)}, port=args.port, address=args.address, show=args.show,
                      start=False, title="latentlab", threaded=False, check_unused_sessions_milliseconds=1000,
                      websocket_origin=[f"{args.address}:{args.port}", f"localhost:{args.port}"])
    print(f"latentlab dashboard: http://{host}:{server.port}/ ({queue.workers} workers)", flush=True)
    server.start()
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        queue.shutdown(timeout=3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
