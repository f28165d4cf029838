"""Flow tab: train a flow on a system's potential alone (live beta, ESS, loss), its weighted samples over the exact
or reference density, reweighted populations, and all-atom structures of slow-latent states through the flow."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource

from latentlab_app.ngl import NGLViewer
from latentlab_app.state.flow import flow_state

from .common import COLORS, FileControls, alert, fmt, make_figure, param_panel, show_error

#: Samples drawn as points over the density (the histograms use all of them).
SCATTER_POINTS = 2000


class FlowPane(pn.viewable.Viewer):
    """Data-free coarse-graining: train, sample, populations, structures (:class:`latentlab_app.state.flow.FlowState`)."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        f = self.f = flow_state(session)
        self.params = param_panel(f, ["system", "slow_dims", "initial_steps", "steps", "batch", "tempering", "seed",
                                      "n_samples"], inputs=("slow_dims", "initial_steps", "steps", "batch", "seed", "n_samples"))
        self.start = pn.widgets.Button(label="Train flow", color="primary", width=100)
        self.stop = pn.widgets.Button(label="Stop", color="danger", width=80)
        self.draw = pn.widgets.Button(label="Draw samples", width=110)
        self.files = FileControls(f, "flow file (this session's)")
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.table = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = alert()
        self.start.on_click(lambda e: self.f.start())
        self.stop.on_click(lambda e: self.f.stop())
        self.draw.on_click(lambda e: self.f.draw())
        self.z0 = pn.widgets.FloatSlider(label="z0", start=-5.0, end=5.0, step=0.05, value=0.0, width=260)
        self.z1 = pn.widgets.FloatSlider(label="z1", start=-5.0, end=5.0, step=0.05, value=0.0, width=260)
        self.rebuild = pn.widgets.Button(label="Structure at (z0, z1)", width=170)
        self.rebuild.on_click(lambda e: self._structure())
        self.ngl = NGLViewer(height=320, sizing_mode="stretch_width", representation="ball+stick")
        self.structure_box = pn.Column(pn.Row(self.z0, self.z1), self.rebuild, self.ngl, visible=False,
                                       sizing_mode="stretch_width")
        self._build_plots()
        self._version = -1
        self._n = 0
        self._samples_id = None

    # ------------------------------------------------------------------ plots
    def _build_plots(self):
        self.live_src = ColumnDataSource({"step": [], "beta": [], "ess": [], "loss": []})
        self.beta_fig = make_figure("beta (fraction of 1/kT)", height=180, width=300, x_axis_label="step")
        self.beta_fig.line("step", "beta", source=self.live_src, color=COLORS[0])
        self.ess_fig = make_figure("ESS fraction (last stage)", height=180, width=300, x_axis_label="step")
        self.ess_fig.line("step", "ess", source=self.live_src, color=COLORS[2])
        self.loss_fig = make_figure("loss (reverse KL - log Z)", height=180, width=300, x_axis_label="step")
        self.loss_fig.line("step", "loss", source=self.live_src, color=COLORS[1])
        self.density_src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.points_src = ColumnDataSource({"x": [], "y": [], "alpha": []})
        self.density_fig = make_figure("samples over the density", height=330, width=380)
        self.density_fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.density_src,
                               palette="Viridis256")
        self.density_fig.scatter("x", "y", source=self.points_src, size=3, color="white", alpha="alpha")
        self.slow_src = ColumnDataSource({"z": [], "flow": [], "reweighted": []})
        self.slow_fig = make_figure("slow latent z0: flow q vs reweighted", height=330, width=380, x_axis_label="z0",
                                    y_axis_label="density")
        self.slow_fig.line("z", "flow", source=self.slow_src, color=COLORS[0], legend_label="flow q(z0)")
        self.slow_fig.line("z", "reweighted", source=self.slow_src, color=COLORS[1], legend_label="reweighted")

    def _draw_live(self, progress: list) -> None:
        if len(progress) < self._n:
            self._n = 0
            self.live_src.data = {"step": [], "beta": [], "ess": [], "loss": []}
        if len(progress) > self._n:
            new = progress[self._n:]
            self.live_src.stream({"step": [p["step"] for p in new], "beta": [p["beta"] for p in new],
                                  "ess": [p["ess_fraction"] for p in new],
                                  "loss": [p["loss"] if np.isfinite(p["loss"]) else np.nan for p in new]})
            self._n = len(progress)

    def _draw_samples(self) -> None:
        f = self.f
        if id(f.samples) == self._samples_id:
            return
        self._samples_id = id(f.samples)
        pts = f.physical()
        if pts is None:
            self.points_src.data = {"x": [], "y": [], "alpha": []}
            self.density_src.data = {"image": [], "x": [], "y": [], "dw": [], "dh": []}
            self.slow_src.data = {"z": [], "flow": [], "reweighted": []}
            return
        stride = max(1, len(pts["x"]) // SCATTER_POINTS)
        w = pts["w"][::stride]
        self.points_src.data = {"x": pts["x"][::stride], "y": pts["y"][::stride],
                                "alpha": np.clip(0.15 + 0.85 * w / max(w.max(), 1e-300), 0.05, 1.0)}
        dens = f.density()
        if dens is not None:
            xe, ye = dens["x_edges"], dens["y_edges"]
            self.density_src.data = {"image": [dens["p"].T], "x": [xe[0]], "y": [ye[0]], "dw": [xe[-1] - xe[0]],
                                     "dh": [ye[-1] - ye[0]]}
            self.density_fig.title.text = f"samples over the {dens['kind']} density"
        self.density_fig.xaxis.axis_label, self.density_fig.yaxis.axis_label = pts["names"]
        h = f.slow_histogram()
        if h is not None:
            e = h["edges"]
            self.slow_src.data = {"z": 0.5 * (e[1:] + e[:-1]), "flow": h["flow"], "reweighted": h["reweighted"]}

    def _table(self) -> str:
        f = self.f
        rows = f.populations_table()
        if not rows:
            return ""
        rep = f.report or {}
        lines = [f"ESS **{fmt(rep.get('ess_fraction'), '.3f')}** of {rep.get('n_samples')} samples"
                 + (f"; bond score {fmt(rep.get('bond_score'), '.4f')}" if "bond_score" in rep else ""),
                 "", "| state | reweighted | target | z |", "|---|---|---|---|"]
        for r in rows:
            target = "" if r["target"] is None else f"{r['target']:.4f} ({r['kind']})"
            lines.append(f"| {r['state']} | {r['value']:.4f} +- {r['stderr']:.4f} | {target} | {fmt(r['z'], '+.2f')} |")
        return "\n".join(lines)

    def _structure(self) -> None:
        f = self.f
        if f.trained is None:
            return
        k = f.trained.n_slow
        q = np.zeros(k)
        q[0] = self.z0.value
        if k > 1:
            q[1] = self.z1.value
        text = f.structure_pdb(q)
        if text:
            self.ngl.pdb = text
        f.bump()

    # ------------------------------------------------------------------ refresh
    def refresh(self):
        f = self.f
        waiting = f.waiting_text()
        if f.version == self._version and not waiting:
            return
        self._version = f.version
        self._draw_live(list(f.progress))
        self._draw_samples()
        running = " (running)" if f.running else ""
        self.status.object = f"flow: **{f.label or 'none'}**{running}  \n{waiting or f.status}"
        self.table.object = self._table()
        show_error(self.error, f.error)
        self.start.disabled = f.running
        self.stop.disabled = not f.running
        self.draw.disabled = f.trained is None
        molecule = f.trained is not None and f.trained.system.topology is not None and f.trained.system.n_atoms > 3
        if molecule:
            b = float(f.trained.flow.bound)
            for slider in (self.z0, self.z1):
                slider.start, slider.end = -0.99 * b, 0.99 * b
            self.z1.visible = f.trained.n_slow > 1
        self.structure_box.visible = molecule

    def __panel__(self):
        return pn.Row(
            pn.Column(self.params, pn.Row(self.start, self.stop), self.draw, self.status, self.error,
                      self.files.layout, width=320),
            pn.Column(pn.Row(self.beta_fig, self.ess_fig, self.loss_fig),
                      pn.Row(self.density_fig, self.slow_fig), self.table, self.structure_box,
                      sizing_mode="stretch_width"))
