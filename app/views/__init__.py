"""Dashboard views: ``pn.viewable.Viewer`` panes over the state in :mod:`latentlab_app.state`, one module per tab.

Jobs (worker processes) only change state; the views read it from one periodic callback per session
(:meth:`Dashboard.tick`), the only place Bokeh models are touched outside user callbacks, and only
the visible tab is redrawn.  Live plots are Bokeh ``ColumnDataSource`` objects updated in place
(``stream`` for growing series, ``patch`` for histograms): HoloViews' ``Pipe``/``Buffer`` streams
cost 8-11 ms of server CPU per plot update against ~0.1 ms (``benchmarks/bench_dashboard.py
--plotting``), which a server shared by a class cannot afford.
"""

from __future__ import annotations

import panel as pn
import param

from latentlab_app.state import Session

from .common import alert, show_error
from .kinetics import KineticsPane
from .mapping import MapPane
from .reconstruct import ReconstructPane
from .simulate import SimulatePane
from .structure import StructurePane
from .train import TrainPane

__all__ = ["Dashboard", "create_app", "StructurePane", "MapPane", "TrainPane", "SimulatePane", "KineticsPane",
           "ReconstructPane"]


class Dashboard(pn.viewable.Viewer):
    """The whole dashboard for one session: data set chooser and the five panes in tabs."""

    period_ms = param.Integer(default=100, doc="refresh period of the live views (ms); only the visible tab is redrawn")

    def __init__(self, source: str | None = None, session: Session | None = None, queue=None, **params):
        super().__init__(**params)
        self.s = session or Session(source, queue=queue)
        self.source = pn.widgets.Select(label="data set", options=self._choices(), value=self.s.data.source,
                                        width=220)
        self.path = pn.widgets.TextInput(label="or a file path", placeholder="/path/to/data.h5", width=260)
        self.open = pn.widgets.Button(label="Open", width=70)
        self.upload = pn.widgets.FileInput(accept=".h5,.npz,.pdb,.xtc,.dcd", width=220)
        self.message = pn.pane.Markdown(self.s.data.message)
        self.error = alert(self.s.data.error)
        self.structure = StructurePane(self.s)
        self.map = MapPane(self.s)
        self.train = TrainPane(self.s)
        self.simulate = SimulatePane(self.s)
        self.reconstruct = ReconstructPane(self.s)
        self.source.param.watch(lambda e: self._load(e.new), "value")
        self.open.on_click(lambda e: self._load(self.path.value))
        self.upload.param.watch(self._upload, "value")
        self.tabs = pn.Tabs(("Structure & atoms", self.structure), ("Map & consistency", self.map),
                            ("Train", self.train), ("Simulate", self.simulate), ("Reconstruct", self.reconstruct),
                            dynamic=False)
        self._callback = None
        self._document = None
        self._was_connected = False
        self.tabs.param.watch(lambda e: self.tick(), "active")

    def _choices(self):
        names = self.s.data.choices()
        if self.s.data.source not in names:
            names.append(self.s.data.source)
        return names

    def _load(self, source):
        if not source:
            return
        if self.s.load(source):
            self.structure.refresh_structure()
        self.tick()

    def _upload(self, event):
        if event.new:
            if self.s.data.save_upload(self.upload.filename or "upload.h5", event.new):
                self.s.after_load()
                self.structure.refresh_structure()
            self.tick()

    def tick(self):
        """Refresh the visible tab from the state (periodic callback on the server thread); never raises."""
        if self._closed_browser():
            return
        self.message.object = self.s.data.message
        show_error(self.error, self.s.data.error)
        # Only the visible tab is redrawn: hidden plots cost websocket traffic and server time for nothing
        # (each pane remembers the state version it last drew and catches up when shown).
        pane = {1: self.map, 2: self.train, 3: self.simulate, 4: self.reconstruct}.get(self.tabs.active)
        if pane is None:
            return
        try:
            pane.refresh()
        except Exception as err:  # a drawing problem is a message, never a dead session
            show_error(self.error, f"display error in {type(pane).__name__}: {err}")

    def _closed_browser(self) -> bool:
        """True once the browser has gone: the session's work is stopped at once and Bokeh asked to discard it.

        Bokeh itself notices a closed session only after its unused-session lifetime (15 s by default).
        """
        session = getattr(getattr(self._document, "session_context", None), "_session", None)
        if session is None:
            return False
        if session.connection_count > 0:
            self._was_connected = True
            return False
        if self._was_connected and not self.s.closed:
            self.close()
            session.request_expiration()
        return self.s.closed

    def close(self) -> None:
        """Stop the live updates and the session's work (a closed browser tab)."""
        if self._callback is not None:
            self._callback.stop()
            self._callback = None
        self.s.close()

    def start_updates(self):
        if self._callback is None:
            self._document = pn.state.curdoc
            self._callback = pn.state.add_periodic_callback(self.tick, period=self.period_ms)
        return self._callback

    def __panel__(self):
        header = pn.Row(pn.pane.Markdown("## latentlab — machine-learned coarse-graining", margin=(0, 10)),
                        self.source, self.path, self.open, self.upload)
        return pn.Column(header, self.message, self.error, self.tabs, sizing_mode="stretch_width")


def create_app(source: str | None = None, queue=None) -> pn.viewable.Viewable:
    """A dashboard for the current session, with live updates and clean-up when the session ends."""
    dash = Dashboard(source, queue=queue)
    dash.tick()
    dash.start_updates()
    try:
        pn.state.on_session_destroyed(lambda context: dash.close())
    except Exception:  # not in a server session (e.g. a notebook)
        pass
    return dash
