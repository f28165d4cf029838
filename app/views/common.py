"""Small helpers the panes share: Bokeh figures, number formatting, alerts."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.plotting import figure

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def make_figure(title: str, height: int = 230, width: int = 360, **kw):
    fig = figure(title=title, height=height, width=width, toolbar_location=None, **kw)
    fig.title.text_font_size = "11pt"
    return fig


def fmt(value, spec: str = ".3g") -> str:
    """``value`` formatted, or ``n/a`` for None / NaN / infinity."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def alert(text: str = "", kind: str = "danger") -> pn.pane.Alert:
    return pn.pane.Alert(text, alert_type=kind, visible=bool(text), margin=(2, 5))


def show_error(pane: pn.pane.Alert, text: str) -> None:
    pane.object, pane.visible = text, bool(text)


def changed_since_drawn(view, state) -> str | None:
    """What ``view`` must draw of ``state``: None when nothing changed since it last drew (same ``version``,
    not waiting); otherwise the state's waiting text ("" when none), and the version is recorded."""
    waiting = state.waiting_text()
    if state.version == view._version and not waiting:
        return None
    view._version = state.version
    return waiting
