"""Reconstruct tab: the all-atom structure of a walker's state (nearest reference frame), live or played back."""

from __future__ import annotations

import panel as pn

from latentlab_app.ngl import NGLViewer

from .common import alert, show_error


class ReconstructPane(pn.viewable.Viewer):
    """All-atom structure of a walker's state (nearest reference frame, superposed), live or played back."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        self.ngl = NGLViewer(height=380, sizing_mode="stretch_width", representation="ball+stick")
        self.walker = pn.widgets.IntInput(label="walker (0-3 for playback)", value=0, start=0, width=160)
        self.live = pn.widgets.Checkbox(label="follow the simulation live", value=True)
        self.player = pn.widgets.Player(label="trajectory", start=0, end=1, value=0, interval=200, width=360,
                                        loop_policy="loop")
        self.info = pn.pane.Markdown("")
        self.error = alert()
        self.walker.param.watch(lambda e: setattr(self.s.reconstruct, "walker", int(e.new)), "value")
        self.player.param.watch(self._play, "value")
        self._key = None
        self._last_version = -1

    def _ensure_structure(self):
        key = (self.s.data.version, self.s.map.version, id(self.s.train.model))
        if key != self._key:
            try:
                self.ngl.pdb = self.s.reconstruct.reference_pdb()
                self._key = key
            except Exception as err:
                self.s.reconstruct.error = f"reconstruction unavailable: {err}"

    def _play(self, event):
        if self.live.value:
            return
        self._ensure_structure()
        x = self.s.reconstruct.at(int(event.new))
        if x is not None:
            self.ngl.set_positions(x)

    def refresh(self):
        sim = self.s.simulation
        self._ensure_structure()
        self.player.end = max(1, self.s.reconstruct.trajectory_length() - 1)
        if self.live.value and sim.version != self._last_version and sim.last_Q is not None:
            self._last_version = sim.version
            x = self.s.reconstruct.current()
            if x is not None:
                self.ngl.set_positions(x)
        r = self.s.reconstruct
        self.info.object = r.info or "_start a simulation; the structure follows the chosen walker_"
        show_error(self.error, r.error)

    def __panel__(self):
        return pn.Column(pn.Row(self.walker, self.live), self.player, self.info, self.error, self.ngl,
                         sizing_mode="stretch_width")
