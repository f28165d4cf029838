"""Map & consistency tab: map kind and spec, outputs, consistency score, spread of A over Q, closed form vs numeric."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper

from .common import alert, changed_since_drawn, fmt, make_figure, show_error


class MapPane(pn.viewable.Viewer):
    """Map kind and spec for the picked atoms; outputs, consistency score, spread map, closed form vs numeric."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        m = session.map
        self.kind = pn.widgets.Select(label="map kind", options=list(m.param.kind.objects), value=m.kind, width=140)
        self.spec = pn.widgets.TextInput(label="map spec", value=m.spec, width=380)
        self.from_atoms = pn.widgets.Button(label="Use picked atoms", width=140)
        self.apply = pn.widgets.Button(label="Apply spec", color="primary", width=110)
        self.check = pn.widgets.Button(label="Check consistency", color="success", width=150)
        self.description = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.result = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = alert()
        self.from_atoms.on_click(lambda e: self.s.map.from_picked(self.kind.value))
        self.apply.on_click(lambda e: self.s.map.build(self.spec.value))
        self.check.on_click(lambda e: self.s.map.check())
        self.mapper = LinearColorMapper(palette="Viridis256", nan_color=(0, 0, 0, 0))
        self.spread_src = ColumnDataSource({"image": [np.zeros((1, 1))], "x": [0], "y": [0], "dw": [1], "dh": [1]})
        self.fig = make_figure("spread of A over Q (relative, per bin)", height=300, width=440)
        self.fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.spread_src, color_mapper=self.mapper)
        self.fig.add_layout(ColorBar(color_mapper=self.mapper, width=10, title="relative spread"), "right")
        self._version = -1

    def refresh(self):
        m = self.s.map
        waiting = changed_since_drawn(self, m)
        if waiting is None:
            return
        self.spec.value = m.spec
        self.kind.value = m.kind
        self.description.object = f"**{m.spec}**\n\n```\n{m.description}\n```"
        show_error(self.error, m.error)
        self.check.disabled = m.checking
        if m.checking:
            self.result.object = f"_checking consistency... {waiting}_"
        elif m.report:
            self.result.object = self._report_text(m)
            self._draw_spread(m.spread or {})
        else:
            self.result.object = "_press **Check consistency**_"

    @staticmethod
    def _report_text(m) -> str:
        r, cf = m.report, m.closed_form or {}
        closed = (f"closed form vs numeric A: max relative difference **{fmt(cf['max_relative_difference'], '.2e')}** "
                  f"over {cf['frames']} frames" if cf.get("available") else "no closed form for this map")
        return (f"consistency score (level-set 95th percentile of the relative spread of A): "
                f"**{fmt(r['score'])}** → **{r['verdict']}**  \n"
                f"binned spread over Q (mixes in A's variation across a bin): median "
                f"{fmt(r['binned'].get('median'))}, p95 {fmt(r['binned'].get('p95'))}  \n{closed}")

    def _draw_spread(self, sp: dict) -> None:
        vals, edges = sp.get("values"), sp.get("edges") or []
        if vals is None or len(edges) != 2:
            return
        img = np.asarray(vals, dtype=float).T
        self.spread_src.data = {"image": [img], "x": [edges[0][0]], "y": [edges[1][0]],
                                "dw": [edges[0][-1] - edges[0][0]], "dh": [edges[1][-1] - edges[1][0]]}
        finite = img[np.isfinite(img)]
        if finite.size:
            self.mapper.low, self.mapper.high = float(finite.min()), float(max(finite.max(), finite.min() + 1e-30))
        self.fig.xaxis.axis_label, self.fig.yaxis.axis_label = sp["names"][0], sp["names"][1]

    def __panel__(self):
        return pn.Row(
            pn.Column(pn.Row(self.kind, self.from_atoms), pn.Row(self.spec, self.apply), self.error,
                      self.description, self.check, self.result, width=560),
            self.fig)
