"""The latentlab dashboard as a ``panel serve`` script: ``panel serve app/main.py`` (or ``latentlab serve``).

The data set it opens is ``$LATENTLAB_DATA`` (default: the built-in chignolin set).  Every browser
session gets its own :class:`state.Session`.  This file works both from the repository (package ``app``)
and installed (package ``latentlab_app``).
"""

import importlib
import os
import sys

# Serve Bokeh's and Panel's own JS/CSS from this server: nothing is fetched from the internet.
os.environ.setdefault("BOKEH_RESOURCES", "server")
_here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_here))
views = importlib.import_module(os.path.basename(_here) + ".views")

import panel as pn  # noqa: E402

pn.extension(notifications=False)
views.create_app(os.environ.get("LATENTLAB_DATA") or None).servable(title="latentlab")
