"""Simulate tab: latent Langevin settings, Simulate/Pause/Reset, histograms over the ground truth, monitors, kinetics."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource

from .common import COLORS, alert, changed_since_drawn, fmt, make_figure, param_panel, show_error
from .kinetics import KineticsPane


class SimulatePane(pn.viewable.Viewer):
    """Latent Langevin: parameters, Start/Pause/Reset, histograms vs ground truth, traces, JS, temperature, kinetics."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        sim = session.simulation
        self.params = param_panel(sim, ["n_walkers", "dt", "gamma", "dynamics", "friction_model", "temperature",
                                        "steps_per_record", "after_training"],
                                  inputs=("n_walkers", "steps_per_record"), floats=("dt", "gamma", "temperature"),
                                  placeholders={"gamma": "the model's, else automatic", "temperature": "the model's"})
        self.start = pn.widgets.Button(label="Simulate", color="primary", width=90)
        self.pause = pn.widgets.Button(label="Pause", color="warning", width=80)
        self.reset = pn.widgets.Button(label="Reset", width=80)
        self.stats = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = alert()
        self.warning = alert(kind="warning")
        self.start.on_click(lambda e: self.s.simulation.start())
        self.pause.on_click(lambda e: self.s.simulation.pause(wait=False))
        self.reset.on_click(lambda e: self.s.simulation.reset(wait=False))
        self.hist_row = pn.Row()
        self.hist_srcs: list[ColumnDataSource] = []
        self._n_traces = 4
        self._build_monitors()
        self.kinetics = KineticsPane(session)
        self._layout_key = None
        self._version = -1

    def _build_monitors(self):
        self.trace_src = ColumnDataSource({"t": [], **{f"w{j}": [] for j in range(self._n_traces)}})
        self.trace = make_figure("latent trajectories (first coordinate)", x_axis_label="time (ps)", width=360)
        for j in range(self._n_traces):
            self.trace.line("t", f"w{j}", source=self.trace_src, color=COLORS[j % len(COLORS)])
        self.temp_src = ColumnDataSource({"t": [], "T": [], "target": []})
        self.temp = make_figure("kinetic temperature", x_axis_label="time (ps)", y_axis_label="K", width=360)
        self.temp.line("t", "T", source=self.temp_src, color=COLORS[0], legend_label="kinetic")
        self.temp.line("t", "target", source=self.temp_src, color="black", line_dash="dashed", legend_label="target")
        self.js_src = ColumnDataSource({"t": [], "js": [], "floor": []})
        self.js = make_figure("JS divergence (model vs ground truth)", x_axis_label="time (ps)", y_axis_type="log",
                              width=360)
        self.js.line("t", "js", source=self.js_src, color=COLORS[1], legend_label="JS")
        self.js.line("t", "floor", source=self.js_src, color="gray", line_dash="dashed", legend_label="noise floor")

    def _build_histograms(self, snap):
        self.hist_srcs = []
        figs = []
        for i, name in enumerate(snap["names"]):
            e = np.asarray(snap["edges"][i])
            src = ColumnDataSource({"left": e[:-1], "right": e[1:], "model": np.asarray(snap["model"][i], dtype=float),
                                    "reference": np.asarray(snap["reference"][i]), "mid": 0.5 * (e[:-1] + e[1:])})
            fig = make_figure(f"p({name})", width=300, height=240, x_axis_label=name)
            fig.quad(left="left", right="right", bottom=0, top="model", source=src, fill_color=COLORS[0],
                     fill_alpha=0.5, line_color=None, legend_label="model")
            fig.step("mid", "reference", source=src, mode="center", color="black", line_width=2,
                     legend_label="ground truth")
            fig.legend.label_text_font_size = "8pt"
            fig.legend.location = "top_left"
            fig.legend.background_fill_alpha = 0.5
            self.hist_srcs.append(src)
            figs.append(fig)
        self.hist_row.objects = figs
        self.trace_src.data = {"t": [], **{f"w{j}": [] for j in range(self._n_traces)}}
        self.trace.yaxis.axis_label = snap["names"][0] if snap["names"] else ""

    def refresh(self):
        sim = self.s.simulation
        self.kinetics.refresh()
        waiting = changed_since_drawn(self, sim)
        if waiting is None:
            return
        snap = sim.snapshot()
        show_error(self.error, sim.error)
        self.start.disabled = sim.running
        self.pause.disabled = not sim.running
        if snap is None:
            self.stats.object = "_choose a map, then train a model, load one, or use the exact PMF_"
            return
        key = (tuple(snap["names"]), tuple(len(e) for e in snap["edges"]), snap["edges"][0][0], snap["edges"][0][-1])
        if key != self._layout_key:  # new figures carry their data: no update of a model the browser has not seen
            self._build_histograms(snap)
            self._layout_key = key
        else:
            for src, dens in zip(self.hist_srcs, snap["model"]):
                src.patch({"model": [(slice(0, len(dens)), np.asarray(dens))]})
        self._draw_monitors(snap)
        self.stats.object = self._stats_text(sim, snap, waiting)
        show_error(self.warning, "; ".join(snap.get("problems") or []))

    def _draw_monitors(self, snap):
        tr = snap.get("traces")
        if tr is not None:
            tr = np.asarray(tr)
            k = min(tr.shape[1], self._n_traces)
            self.trace_src.data = {"t": np.asarray(snap["trace_time"]),
                                   **{f"w{j}": (tr[:, j, 0] if j < k else np.full(len(tr), np.nan))
                                      for j in range(self._n_traces)}}
        kin = snap["kinetic"]
        self.temp_src.data = {"t": kin[:, 0], "T": kin[:, 1], "target": np.full(len(kin), snap["target_temperature"])}
        js = np.asarray(snap.get("js", np.zeros((0, 3))), dtype=float).reshape(-1, 3)
        if len(js):
            self.js_src.data = {"t": js[:, 0], "js": js[:, 1], "floor": js[:, 2]}

    @staticmethod
    def _stats_text(sim, snap, waiting: str) -> str:
        if not snap.get("records") and not sim.running:
            return "_press **Simulate** (needs a model: train one, load one, or use the exact PMF)_"
        latest = snap.get("js_latest") or {}
        jstext = ("n/a" if latest.get("js_divergence") is None else
                  f"{latest['js_divergence']:.3g} (noise floor {fmt(latest.get('js_noise_floor'))})")
        if latest.get("error"):
            jstext += f" — {latest['error']}"
        kin = snap["kinetic"]
        tk = f"{kin[-1, 1]:.0f} K" if len(kin) else "n/a"
        state = waiting or ("running" if sim.running else sim.status or "paused")
        return (f"**{state}** · t = {snap.get('time', 0.0):.2f} ps · {snap.get('n_samples', 0):,} samples · "
                f"{snap.get('steps_per_second', 0.0):.0f} steps/s  \n"
                f"JS divergence: {jstext}  \nkinetic temperature {tk} (target "
                f"{snap['target_temperature']:.0f} K) · re-seeded walkers: **{snap.get('reseeded', 0)}**")

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.Column(self.params, pn.Row(self.start, self.pause, self.reset), width=300),
                   pn.Column(self.stats, self.error, self.warning, self.hist_row)),
            pn.Row(self.trace, self.temp, self.js),
            self.kinetics)
