"""Train tab: force matching hyper-parameters, Train/Stop, live losses, parity plot, model files."""

from __future__ import annotations

import io

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource

from .common import COLORS, FileControls, alert, changed_since_drawn, make_figure, param_panel, show_error


class TrainPane(pn.viewable.Viewer):
    """Force matching: hyper-parameters, Train/Stop, live losses, parity plot, save/load/download."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        t = session.train
        self.params = param_panel(t, ["width", "depth", "epochs", "lr", "batch_size", "convention", "device",
                                      "val_fraction", "seed"],
                                  inputs=("width", "depth", "epochs", "batch_size", "seed"), floats=("lr", "val_fraction"))
        self.cuda = pn.pane.Markdown(f"CUDA: **{'available' if t.cuda else 'not available (CPU only)'}**")
        self.start = pn.widgets.Button(label="Train", color="primary", width=90)
        self.stop = pn.widgets.Button(label="Stop", color="danger", width=90)
        self.exact = pn.widgets.Button(label="Use exact PMF", width=120)
        self.files = FileControls(t, "model file (this session's)")
        self.download = pn.widgets.FileDownload(callback=self._model_bytes, filename=f"latentlab-model-{session.id}.pt",
                                                label="Download model", color="light", width=150)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = alert()
        self.start.on_click(lambda e: self.s.train.start())
        self.stop.on_click(lambda e: self.s.train.stop())
        self.exact.on_click(lambda e: self.s.train.use_exact())
        self._build_plots()
        self._version = -1
        self._n = 0
        self._parity_id = None

    def _build_plots(self):
        self.loss_src = ColumnDataSource({"epoch": [], "train": [], "val": []})
        self.loss = make_figure("loss", y_axis_type="log", x_axis_label="epoch")
        self.loss.line("epoch", "train", source=self.loss_src, color=COLORS[0], legend_label="train")
        self.loss.scatter("epoch", "train", source=self.loss_src, color=COLORS[0], size=4)
        self.loss.line("epoch", "val", source=self.loss_src, color=COLORS[1], legend_label="validation")
        self.parity_src = ColumnDataSource({"target": [], "predicted": []})
        self.parity = make_figure("parity: grad V (model) vs target", x_axis_label="target", y_axis_label="model")
        self.parity.scatter("target", "predicted", source=self.parity_src, size=2, alpha=0.3)
        self.diag_src = ColumnDataSource({"x": [], "y": []})
        self.parity.line("x", "y", source=self.diag_src, color="black", line_dash="dashed")

    def _model_bytes(self):
        from latentlab_app.worker import model_to_bytes

        model = self.s.train.model
        if model is None:
            self.s.train.error = "no model to download: train one or load one"
            return io.BytesIO(b"")
        return io.BytesIO(model_to_bytes(model))

    def refresh(self):
        t = self.s.train
        waiting = changed_since_drawn(self, t)
        if waiting is None:
            return
        self._draw_history(list(t.history))
        self._draw_parity(t.parity)
        running = " (running)" if t.running else ""
        self.status.object = f"model: **{t.model_label or 'none'}**{running}  \n{waiting or t.status}"
        show_error(self.error, t.error)
        self.start.disabled = t.running
        self.stop.disabled = not t.running
        self.download.disabled = t.model is None
        if self.files.path.value != t.path and not self.files.path.value:
            self.files.path.value = t.path

    def _draw_history(self, hist: list) -> None:
        if len(hist) < self._n:
            self._n = 0
            self.loss_src.data = {"epoch": [], "train": [], "val": []}
        if len(hist) > self._n:
            new = hist[self._n:]
            self.loss_src.stream({"epoch": [h.get("epoch", i + self._n) for i, h in enumerate(new)],
                                  "train": [h["train_loss"] for h in new],
                                  "val": [np.nan if h.get("val_loss") is None else h["val_loss"] for h in new]})
            self._n = len(hist)

    def _draw_parity(self, parity) -> None:
        if id(parity) == self._parity_id:
            return
        self._parity_id = id(parity)
        if parity:
            tg, pr = np.asarray(parity["target"]), np.asarray(parity["predicted"])
            self.parity_src.data = {"target": tg, "predicted": pr}
            lo, hi = float(min(tg.min(), pr.min())), float(max(tg.max(), pr.max()))
            self.diag_src.data = {"x": [lo, hi], "y": [lo, hi]}
        elif len(self.parity_src.data["target"]):
            self.parity_src.data = {"target": [], "predicted": []}

    def __panel__(self):
        return pn.Row(
            pn.Column(self.params, self.cuda, pn.Row(self.start, self.stop, self.exact), self.status, self.error,
                      self.files.layout, self.download, width=320),
            pn.Column(self.loss, self.parity))
