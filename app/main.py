"""The latentlab dashboard as a ``panel serve`` script: ``panel serve app/main.py`` (or ``latentlab serve``).

The data set it opens is ``$LATENTLAB_DATA`` (default: the built-in chignolin set).  Every browser
session gets its own :class:`latentlab_app.state.Session`.  The dashboard runs from its installed
package ``latentlab_app`` (``pip install -e ".[app]"`` installs this folder under that name), which
the worker processes import too.  Add ``--check-unused-sessions 1000`` to free closed sessions quickly.
"""

import os

# Serve Bokeh's and Panel's own JS/CSS from this server: nothing is fetched from the internet.
os.environ.setdefault("BOKEH_RESOURCES", "server")

try:
    from latentlab_app.views import create_app
except ImportError as err:  # pragma: no cover - a checkout without the install step
    raise SystemExit(f"the dashboard package latentlab_app is not installed ({err}). "
                     'Fix: pip install -e ".[app]" in the repository') from None

import panel as pn  # noqa: E402

pn.extension(notifications=False)
create_app(os.environ.get("LATENTLAB_DATA") or None).servable(title="latentlab")
