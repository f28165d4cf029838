"""Dashboard views: ``pn.viewable.Viewer`` panes over the state in :mod:`latentlab_app.state`, one module per tab.

Jobs (worker processes) only change state; the views read it from one periodic callback per session
(:meth:`Dashboard.tick`), the only place Bokeh models are touched outside user callbacks, and only
the visible tab is redrawn.  Live plots are Bokeh ``ColumnDataSource`` objects updated in place
(``stream`` for growing series, ``patch`` for histograms): HoloViews' ``Pipe``/``Buffer`` streams
cost 8-11 ms of server CPU per plot update against ~0.1 ms (``benchmarks/bench_dashboard.py
--plotting``), which a server shared by a class cannot afford.
"""

from __future__ import annotations

import threading

import panel as pn
import param

from latentlab_app.state import Session

from .common import alert, show_error
from .flow import FlowPane
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

    TABS = (("Structure & atoms", StructurePane), ("Map & consistency", MapPane), ("Train", TrainPane),
            ("Simulate", SimulatePane), ("Reconstruct", ReconstructPane), ("Flow", FlowPane))

    period_ms = param.Integer(default=100, doc="refresh period of the live views while work runs (ms)")
    idle_period_ms = param.Integer(default=1000, doc="refresh period when nothing runs (ms): a periodic callback "
                                                     "costs the server ~1-2 ms, whatever it does")

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
        self.source.param.watch(lambda e: self._load(e.new), "value")
        self.open.on_click(lambda e: self._load(self.path.value))
        self.upload.param.watch(self._upload, "value")
        # A tab's pane is built when it is first shown, and only the shown tab is in the browser (dynamic):
        # a new session costs the server a tenth of the time and the page a tenth of the models.
        self._panes: dict[int, pn.viewable.Viewer] = {}
        self._shown: set[int] = set()
        self.tabs = pn.Tabs(*[(title, pn.Column()) for title, _ in self.TABS], dynamic=True)
        self._show(0)
        self._callback = None
        self._document = None
        self._was_connected = False
        self.tabs.param.watch(self._tab_changed, "active")

    # ------------------------------------------------------------------ panes, built when first shown
    def pane(self, index: int):
        """The pane of tab ``index`` (built now if it was not yet)."""
        if index not in self._panes:
            self._panes[index] = self.TABS[index][1](self.s)
        return self._panes[index]

    def _show(self, index: int) -> None:
        if index not in self._shown:
            self._shown.add(index)
            objects = list(self.tabs.objects)
            objects[index] = self.pane(index)
            self.tabs.objects = objects

    def _tab_changed(self, event) -> None:
        self._show(event.new)
        if self._document is None:  # a notebook or a test
            self.tick()
            return
        # After Panel has put the tab's models into the page: an update of a model the browser does not
        # have yet fails there ("reference ... isn't known").
        self._document.add_next_tick_callback(self.tick)
        self._woken(None)

    structure = property(lambda self: self.pane(0))
    map = property(lambda self: self.pane(1))
    train = property(lambda self: self.pane(2))
    simulate = property(lambda self: self.pane(3))
    reconstruct = property(lambda self: self.pane(4))

    def _choices(self):
        names = self.s.data.choices()
        if self.s.data.source not in names:
            names.append(self.s.data.source)
        return names

    def _load(self, source):
        if not source:
            return
        if self.s.load(source) and 0 in self._panes:
            self.structure.refresh_structure()
        self.tick()

    def _upload(self, event):
        if event.new:
            if self.s.data.save_upload(self.upload.filename or "upload.h5", event.new):
                self.s.after_load()
                if 0 in self._panes:
                    self.structure.refresh_structure()
            self.tick()

    def tick(self):
        """Refresh the visible tab from the state (periodic callback on the server thread); never raises."""
        if self._closed_browser():
            return
        self._adapt_period()
        self.message.object = self.s.data.message
        show_error(self.error, self.s.data.error)
        # Only the visible tab is redrawn: hidden plots cost websocket traffic and server time for nothing
        # (each pane remembers the state version it last drew and catches up when shown).
        if self.tabs.active == 0 or self.tabs.active not in self._panes:
            return
        pane = self._panes[self.tabs.active]
        try:
            pane.refresh()
        except Exception as err:  # a drawing problem is a message, never a dead session
            show_error(self.error, f"display error in {type(pane).__name__}: {err}")

    def _adapt_period(self) -> None:
        if self._callback is None:
            return
        busy = self.s.train.running or self.s.simulation.running or self.s.map.checking or self.s.kinetics.calibrating \
            or getattr(getattr(self.s, "flow", None), "running", False)
        period = self.period_ms if busy else self.idle_period_ms
        if self._callback.period != period:
            self._callback.period = period

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
            self._thread = threading.get_ident()
            self._callback = pn.state.add_periodic_callback(self.tick, period=self.period_ms)
            for state in (self.s.map, self.s.train, self.s.simulation, self.s.kinetics):
                state.param.watch(self._woken, "version")
        return self._callback

    def _woken(self, event) -> None:
        """A change made by the user (on the server's thread): redraw at the fast rate from now on."""
        if self._callback is not None and threading.get_ident() == self._thread and \
                self._callback.period != self.period_ms:
            self._callback.period = self.period_ms

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
