"""The latentlab dashboard: ``panel serve app/main.py`` (or ``latentlab serve``).

The data set it opens is ``$LATENTLAB_DATA`` (default: the built-in chignolin
set, falling back to alanine dipeptide with a message while chignolin is not
there).  Every browser session gets its own :class:`app.state.Session`.
"""

import os
import sys

# Serve Bokeh's and Panel's own JS/CSS from this server: nothing is fetched from the internet.
os.environ.setdefault("BOKEH_RESOURCES", "server")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import panel as pn  # noqa: E402

from app.views import create_app  # noqa: E402

pn.extension(notifications=False)
create_app(os.environ.get("LATENTLAB_DATA") or None).servable(title="latentlab")
