"""The latentlab dashboard (Panel), installed as ``latentlab_app``.  Imports the library; the library never imports this.

- :mod:`latentlab_app.state`: param state classes (no Panel), one :class:`~latentlab_app.state.Session`
  per browser session, one module per concern
- :mod:`latentlab_app.views`: Panel views (``Dashboard`` and one pane per tab), also usable in Jupyter
- :mod:`latentlab_app.jobs`: the job queue; training, simulations and consistency checks run in worker
  processes (:mod:`latentlab_app.worker`, :mod:`latentlab_app.live_simulation`,
  :mod:`latentlab_app.live_kinetics`)
- :mod:`latentlab_app.ngl`: the NGL viewer component (vendored ``static/ngl.js``)
- ``__main__``: the server (``latentlab serve``); ``app/main.py``: the ``panel serve`` entry point
"""
