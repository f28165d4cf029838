"""Small helpers the panes share: Bokeh figures, number formatting, alerts."""

from __future__ import annotations

import numpy as np
import panel as pn
import param
from bokeh.plotting import figure

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def make_figure(title: str, height: int = 230, width: int = 360, **kw):
    fig = figure(title=title, height=height, width=width, toolbar_location=None, **kw)
    fig.title.text_font_size = "11pt"
    return fig


#: Width (px) of a parameter column and of the widgets in it (Panel's widgets default to 300 px, wider than the column).
PARAM_WIDTH = 260


def param_panel(state, parameters: list, inputs=(), floats=(), placeholders=None) -> pn.Param:
    """The widgets of ``parameters`` of ``state`` in one column, each as wide as the column allows:
    ``inputs`` as integer boxes, ``floats`` as number boxes (instead of sliders), the others Panel's default;
    ``placeholders``: what an empty box means, by parameter."""
    kinds = {**{n: pn.widgets.IntInput for n in inputs}, **{n: pn.widgets.FloatInput for n in floats}}
    placeholders = placeholders or {}
    widgets = {n: {"width": PARAM_WIDTH - 10, **({"type": kinds[n]} if n in kinds else {}),
                   **({"placeholder": placeholders[n]} if n in placeholders else {})}
               for n in parameters if n in kinds or not isinstance(state.param[n], param.Boolean)}
    return pn.Param(state, parameters=parameters, show_name=False, width=PARAM_WIDTH, widgets=widgets)


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


class FileControls:
    """A file path with Save (refuses an existing file unless "overwrite" is ticked) and Load buttons, wired to
    a state's ``save(path, overwrite=)`` and ``load(path)``; :attr:`layout` is the path above the buttons."""

    def __init__(self, state, label: str):
        self.path = pn.widgets.TextInput(label=label, value=state.path, width=260)
        self.overwrite = pn.widgets.Checkbox(label="overwrite", value=False, width=90)
        self.save = pn.widgets.Button(label="Save", width=70)
        self.load = pn.widgets.Button(label="Load", width=70)
        self.save.on_click(lambda e: state.save(self.path.value, overwrite=self.overwrite.value))
        self.load.on_click(lambda e: state.load(self.path.value))
        self.layout = pn.Column(self.path, pn.Row(self.save, self.load, self.overwrite), margin=0)
