"""The latentlab dashboard (Panel).  Imports the library; the library never imports this.

- :mod:`app.state`: param state classes (no Panel), one :class:`app.state.Session` per browser session
- :mod:`app.ngl`: the NGL viewer component (vendored ``static/ngl.js``)
- :mod:`app.views`: Panel views (``Dashboard`` and one pane per tab), also usable in Jupyter
- ``app/main.py``: the ``panel serve`` entry point
"""
