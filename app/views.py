"""Dashboard views: ``pn.viewable.Viewer`` panes over the state in :mod:`app.state`.

Worker threads only change state; the views read it from one periodic
callback per session (:meth:`Dashboard.tick`, 5 times a second), which is the
only place Bokeh models are touched outside user callbacks.
"""

from __future__ import annotations

import os

import numpy as np
import panel as pn
import param
from bokeh.models import ColorBar, ColumnDataSource, LinearColorMapper
from bokeh.plotting import figure

from .ngl import NGLViewer
from .state import Session

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def _figure(title, height=230, width=360, **kw):
    fig = figure(title=title, height=height, width=width, toolbar_location=None, **kw)
    fig.title.text_font_size = "11pt"
    return fig


def _fmt(value, spec=".3g"):
    return "n/a" if value is None or (isinstance(value, float) and not np.isfinite(value)) else format(value, spec)


def _alert(text, kind="danger"):
    return pn.pane.Alert(text, alert_type=kind, visible=bool(text), margin=(2, 5))


class StructurePane(pn.viewable.Viewer):
    """NGL view of the reference structure; pick atoms by clicking or an mdtraj selection."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.s = session
        self.ngl = NGLViewer(height=380, sizing_mode="stretch_width")
        self.selection = pn.widgets.TextInput(label="mdtraj selection (or indices)", placeholder="name CA and resid 0 5 9")
        self.select_btn = pn.widgets.Button(label="Select", color="primary")
        self.clear_btn = pn.widgets.Button(label="Clear")
        self.listing = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = _alert("")
        self.select_btn.on_click(lambda e: self._select())
        self.selection.param.watch(lambda e: self._select(), "value")  # updates on Enter
        self.clear_btn.on_click(lambda e: self.s.atoms.clear())
        self.ngl.param.watch(self._clicked, "picked_event")
        self.s.atoms.param.watch(lambda e: self.refresh_atoms(), ["picked", "error"])
        self.refresh_structure()

    def _select(self):
        self.s.atoms.select(self.selection.value)

    def _clicked(self, event):
        if event.new:
            self.s.atoms.toggle(int(event.new[0]))

    def refresh_structure(self):
        top = self.s.data.structure_topology()
        ca_only = top.n_atoms > 3 and all(a.name == "CA" for a in top.atoms)
        self.ngl.representation = "ball+stick,backbone" if ca_only else "ball+stick"
        self.ngl.pdb = self.s.data.structure_pdb()
        self.refresh_atoms()

    def refresh_atoms(self):
        atoms = self.s.atoms
        self.ngl.highlight = list(atoms.picked)
        labels = self.s.data.atom_labels(atoms.picked)
        self.listing.object = ("**picked atoms** (click atoms in the viewer to add/remove):\n\n" +
                               (", ".join(labels) if labels else "_none_"))
        self.error.object, self.error.visible = atoms.error, bool(atoms.error)

    def __panel__(self):
        return pn.Column(self.ngl, pn.Row(self.selection, self.select_btn, self.clear_btn), self.error, self.listing,
                         sizing_mode="stretch_width")


class MapPane(pn.viewable.Viewer):
    """Map kind and spec for the picked atoms; outputs, consistency score, spread map, closed form vs numeric."""

    def __init__(self, session: Session, **params):
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
        self.error = _alert("")
        self.from_atoms.on_click(lambda e: self.s.map.from_picked(self.kind.value))
        self.apply.on_click(lambda e: self.s.map.build(self.spec.value))
        self.check.on_click(lambda e: self.s.map.check())
        self.mapper = LinearColorMapper(palette="Viridis256", nan_color=(0, 0, 0, 0))
        self.spread_src = ColumnDataSource({"image": [np.zeros((1, 1))], "x": [0], "y": [0], "dw": [1], "dh": [1]})
        self.fig = _figure("spread of A over Q (relative, per bin)", height=300, width=440)
        self.fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.spread_src,
                       color_mapper=self.mapper)
        self.fig.add_layout(ColorBar(color_mapper=self.mapper, width=10, title="relative spread"), "right")
        self._version = -1

    def refresh(self):
        m = self.s.map
        if m.version == self._version:
            return
        self._version = m.version
        self.spec.value = m.spec
        self.kind.value = m.kind
        self.description.object = f"**{m.spec}**\n\n```\n{m.description}\n```"
        self.error.object, self.error.visible = m.error, bool(m.error)
        if m.checking:
            self.result.object = "_checking consistency..._"
        elif m.report:
            r = m.report
            cf = m.closed_form or {}
            closed = (f"closed form vs numeric A: max relative difference **{_fmt(cf['max_relative_difference'], '.2e')}** "
                      f"over {cf['frames']} frames" if cf.get("available") else "no closed form for this map")
            self.result.object = (f"consistency score (level-set 95th percentile of the relative spread of A): "
                                  f"**{_fmt(r['score'])}** → **{r['verdict']}**  \n"
                                  f"binned spread over Q (mixes in A's variation across a bin): median "
                                  f"{_fmt(r['binned'].get('median'))}, p95 {_fmt(r['binned'].get('p95'))}  \n{closed}")
            sp = m.spread or {}
            vals = sp.get("values")
            edges = sp.get("edges") or []
            if vals is not None and len(edges) == 2:
                img = np.asarray(vals, dtype=float).T
                self.spread_src.data = {"image": [img], "x": [edges[0][0]], "y": [edges[1][0]],
                                        "dw": [edges[0][-1] - edges[0][0]], "dh": [edges[1][-1] - edges[1][0]]}
                finite = img[np.isfinite(img)]
                if finite.size:
                    self.mapper.low, self.mapper.high = float(finite.min()), float(max(finite.max(), finite.min() + 1e-30))
                self.fig.xaxis.axis_label, self.fig.yaxis.axis_label = sp["names"][0], sp["names"][1]
        else:
            self.result.object = "_press **Check consistency**_"

    def __panel__(self):
        return pn.Row(
            pn.Column(pn.Row(self.kind, self.from_atoms), pn.Row(self.spec, self.apply), self.error,
                      self.description, self.check, self.result, width=560),
            self.fig)


class TrainPane(pn.viewable.Viewer):
    """Force matching: hyper-parameters, Start/Stop, live losses, parity plot, save/load."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.s = session
        t = session.train
        self.params = pn.Param(t, parameters=["width", "depth", "epochs", "lr", "batch_size", "convention", "device",
                                              "val_fraction"], show_name=False, width=260,
                               widgets={"lr": pn.widgets.FloatInput, "width": pn.widgets.IntInput,
                                        "depth": pn.widgets.IntInput, "epochs": pn.widgets.IntInput,
                                        "batch_size": pn.widgets.IntInput, "val_fraction": pn.widgets.FloatInput})
        self.cuda = pn.pane.Markdown(f"CUDA: **{'available' if t.cuda else 'not available (CPU only)'}**")
        self.start = pn.widgets.Button(label="Train", color="primary", width=90)
        self.stop = pn.widgets.Button(label="Stop", color="danger", width=90)
        self.exact = pn.widgets.Button(label="Use exact PMF", width=120)
        self.path = pn.widgets.TextInput(label="model file", value=os.path.abspath("latentlab-model.pt"), width=260)
        self.save = pn.widgets.Button(label="Save", width=80)
        self.load = pn.widgets.Button(label="Load", width=80)
        self.status = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = _alert("")
        self.start.on_click(lambda e: self.s.train.start())
        self.stop.on_click(lambda e: self.s.train.stop())
        self.exact.on_click(lambda e: self.s.train.use_exact())
        self.save.on_click(lambda e: self.s.train.save(self.path.value))
        self.load.on_click(lambda e: self.s.train.load(self.path.value))
        self.loss_src = ColumnDataSource({"epoch": [], "train": [], "val": []})
        self.loss = _figure("loss", y_axis_type="log", x_axis_label="epoch")
        self.loss.line("epoch", "train", source=self.loss_src, color=COLORS[0], legend_label="train")
        self.loss.scatter("epoch", "train", source=self.loss_src, color=COLORS[0], size=4)
        self.loss.line("epoch", "val", source=self.loss_src, color=COLORS[1], legend_label="validation")
        self.parity_src = ColumnDataSource({"target": [], "predicted": []})
        self.parity = _figure("parity: grad V (model) vs target", x_axis_label="target", y_axis_label="model")
        self.parity.scatter("target", "predicted", source=self.parity_src, size=2, alpha=0.3)
        self.diag_src = ColumnDataSource({"x": [], "y": []})
        self.parity.line("x", "y", source=self.diag_src, color="black", line_dash="dashed")
        self._version = -1
        self._n = 0

    def refresh(self):
        t = self.s.train
        if t.version == self._version:
            return
        self._version = t.version
        hist = list(t.history)
        if len(hist) < self._n:
            self._n = 0
            self.loss_src.data = {"epoch": [], "train": [], "val": []}
        if len(hist) > self._n:
            new = hist[self._n:]
            self.loss_src.stream({"epoch": [h.get("epoch", i + self._n) for i, h in enumerate(new)],
                                  "train": [h["train_loss"] for h in new],
                                  "val": [np.nan if h.get("val_loss") is None else h["val_loss"] for h in new]})
            self._n = len(hist)
        if t.parity:
            tg, pr = np.asarray(t.parity["target"]), np.asarray(t.parity["predicted"])
            self.parity_src.data = {"target": tg, "predicted": pr}
            lo, hi = float(min(tg.min(), pr.min())), float(max(tg.max(), pr.max()))
            self.diag_src.data = {"x": [lo, hi], "y": [lo, hi]}
        elif len(self.parity_src.data["target"]):
            self.parity_src.data = {"target": [], "predicted": []}
        running = " (running)" if t.running else ""
        self.status.object = f"model: **{t.model_label or 'none'}**{running}  \n{t.status}"
        self.error.object, self.error.visible = t.error, bool(t.error)
        self.start.disabled = t.running
        self.stop.disabled = not t.running

    def __panel__(self):
        return pn.Row(
            pn.Column(self.params, self.cuda, pn.Row(self.start, self.stop, self.exact), self.status, self.error,
                      self.path, pn.Row(self.save, self.load), width=300),
            pn.Column(self.loss, self.parity))


class SimulatePane(pn.viewable.Viewer):
    """Latent Langevin: parameters, Start/Pause/Reset, histograms vs ground truth, traces, JS, temperature."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.s = session
        sim = session.simulation
        self.params = pn.Param(sim, parameters=["n_walkers", "dt", "gamma", "temperature", "steps_per_record",
                                                "after_training"],
                               show_name=False, width=260,
                               widgets={"n_walkers": pn.widgets.IntInput, "dt": pn.widgets.FloatInput,
                                        "gamma": pn.widgets.FloatInput, "temperature": pn.widgets.FloatInput,
                                        "steps_per_record": pn.widgets.IntInput})
        self.start = pn.widgets.Button(label="Simulate", color="primary", width=90)
        self.pause = pn.widgets.Button(label="Pause", color="warning", width=80)
        self.reset = pn.widgets.Button(label="Reset", width=80)
        self.stats = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.error = _alert("")
        self.start.on_click(lambda e: self.s.simulation.start())
        self.pause.on_click(lambda e: self.s.simulation.pause())
        self.reset.on_click(lambda e: self.s.simulation.reset())
        self.hist_row = pn.Row()
        self.hist_srcs = []
        self.trace_src = ColumnDataSource({"t": []})
        self.trace = _figure("latent trajectories (first coordinate)", x_axis_label="time (ps)", width=360)
        self._n_traces = sim.trace_walkers
        self.trace_src.data = {"t": [], **{f"w{j}": [] for j in range(self._n_traces)}}
        for j in range(self._n_traces):
            self.trace.line("t", f"w{j}", source=self.trace_src, color=COLORS[j % len(COLORS)])
        self.temp_src = ColumnDataSource({"t": [], "T": [], "target": []})
        self.temp = _figure("kinetic temperature", x_axis_label="time (ps)", y_axis_label="K", width=360)
        self.temp.line("t", "T", source=self.temp_src, color=COLORS[0], legend_label="kinetic")
        self.temp.line("t", "target", source=self.temp_src, color="black", line_dash="dashed", legend_label="target")
        self.js_src = ColumnDataSource({"t": [], "js": [], "floor": []})
        self.js = _figure("JS divergence (model vs ground truth)", x_axis_label="time (ps)", y_axis_type="log",
                          width=360)
        self.js.line("t", "js", source=self.js_src, color=COLORS[1], legend_label="JS")
        self.js.line("t", "floor", source=self.js_src, color="gray", line_dash="dashed", legend_label="noise floor")
        self._layout_key = None
        self._version = -1
        self._trace_lines = 0

    def _build_plots(self, snap):
        names = snap["names"]
        self.hist_srcs = []
        figs = []
        for i, name in enumerate(names):
            e = np.asarray(snap["edges"][i])
            src = ColumnDataSource({"left": e[:-1], "right": e[1:], "model": np.zeros(len(e) - 1),
                                    "reference": snap["reference"][i], "mid": 0.5 * (e[:-1] + e[1:])})
            fig = _figure(f"p({name})", width=300, height=240, x_axis_label=name)
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
        self.trace.yaxis.axis_label = names[0] if names else ""

    def refresh(self):
        sim = self.s.simulation
        if sim.version == self._version:
            return
        self._version = sim.version
        if sim.edges is None:
            self.stats.object = "_press **Simulate** (needs a model: train one, load one, or use the exact PMF)_"
            self.error.object, self.error.visible = sim.error, bool(sim.error)
            for src in self.hist_srcs:
                src.data["model"] = np.zeros(len(src.data["left"]))
                src.data = dict(src.data)
            return
        snap = sim.snapshot()
        key = (tuple(snap["names"]), id(snap["edges"]))
        if key != self._layout_key:
            self._build_plots(snap)
            self._layout_key = key
        for src, dens in zip(self.hist_srcs, snap["model"]):
            src.patch({"model": [(slice(0, len(dens)), dens)]})
        if snap["traces"] is not None:
            tr = snap["traces"]
            k = min(tr.shape[1], self._n_traces)
            self.trace_src.data = {"t": snap["trace_time"],
                                   **{f"w{j}": (tr[:, j, 0] if j < k else np.full(len(tr), np.nan))
                                      for j in range(self._n_traces)}}
        kin = snap["kinetic"]
        self.temp_src.data = {"t": kin[:, 0], "T": kin[:, 1], "target": np.full(len(kin), snap["target_temperature"])}
        js = snap["js"]
        if len(js):
            self.js_src.data = {"t": js[:, 0], "js": js[:, 1], "floor": js[:, 2]}
        latest = snap["js_latest"] or {}
        jstext = ("n/a" if latest.get("js_divergence") is None else
                  f"{latest['js_divergence']:.3g} (noise floor {latest.get('js_noise_floor', float('nan')):.3g})")
        if latest.get("error"):
            jstext += f" — {latest['error']}"
        tk = f"{kin[-1, 1]:.0f} K" if len(kin) else "n/a"
        self.stats.object = (f"**{'running' if snap['running'] else 'paused'}** · t = {snap['time']:.2f} ps · "
                             f"{snap['n_samples']:,} samples · {snap['steps_per_second']:.0f} steps/s  \n"
                             f"JS divergence: {jstext}  \nkinetic temperature {tk} (target "
                             f"{snap['target_temperature']:.0f} K) · re-seeded walkers: **{snap['reseeded']}**")
        self.error.object, self.error.visible = sim.error, bool(sim.error)
        self.start.disabled = snap["running"]
        self.pause.disabled = not snap["running"]

    def __panel__(self):
        return pn.Column(
            pn.Row(pn.Column(self.params, pn.Row(self.start, self.pause, self.reset), width=300),
                   pn.Column(self.stats, self.error, self.hist_row)),
            pn.Row(self.trace, self.temp, self.js))


class ReconstructPane(pn.viewable.Viewer):
    """All-atom structure of a walker's state (nearest reference frame, superposed), live or played back."""

    def __init__(self, session: Session, **params):
        super().__init__(**params)
        self.s = session
        self.ngl = NGLViewer(height=380, sizing_mode="stretch_width", representation="ball+stick")
        self.walker = pn.widgets.IntInput(label="walker (0-3 for playback)", value=0, start=0, width=160)
        self.live = pn.widgets.Checkbox(label="follow the simulation live", value=True)
        self.player = pn.widgets.Player(label="trajectory", start=0, end=1, value=0, interval=200, width=360,
                                        loop_policy="loop")
        self.info = pn.pane.Markdown("")
        self.error = _alert("")
        self.walker.param.watch(lambda e: setattr(self.s.reconstruct, "walker", int(e.new)), "value")
        self.player.param.watch(self._play, "value")
        self._key = None
        self._last_version = -1

    def _ensure_structure(self):
        key = (self.s.data.version, self.s.map.version)
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
        n = self.s.reconstruct.trajectory_length()
        self.player.end = max(1, n - 1)
        if self.live.value and sim.version != self._last_version and sim.last_Q is not None:
            self._last_version = sim.version
            x = self.s.reconstruct.current()
            if x is not None:
                self.ngl.set_positions(x)
        r = self.s.reconstruct
        self.info.object = r.info or "_start a simulation; the structure follows the chosen walker_"
        self.error.object, self.error.visible = r.error, bool(r.error)

    def __panel__(self):
        return pn.Column(pn.Row(self.walker, self.live), self.player, self.info, self.error, self.ngl,
                         sizing_mode="stretch_width")


class Dashboard(pn.viewable.Viewer):
    """The whole dashboard for one session: data set chooser and the five panes in tabs."""

    period_ms = param.Integer(default=100, doc="refresh period of the live views (ms); only the visible tab is redrawn")

    def __init__(self, source: str | None = None, session: Session | None = None, **params):
        super().__init__(**params)
        self.s = session or Session(source)
        self.source = pn.widgets.Select(label="data set", options=self._choices(), value=self.s.data.source,
                                        width=220)
        self.path = pn.widgets.TextInput(label="or a file path", placeholder="/path/to/data.h5", width=260)
        self.open = pn.widgets.Button(label="Open", width=70)
        self.upload = pn.widgets.FileInput(accept=".h5,.npz,.pdb,.xtc,.dcd", width=220)
        self.message = pn.pane.Markdown(self.s.data.message)
        self.error = _alert(self.s.data.error)
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
        """Refresh every view from the state (periodic callback on the server thread)."""
        self.message.object = self.s.data.message
        self.error.object, self.error.visible = self.s.data.error, bool(self.s.data.error)
        # Only the visible tab is redrawn: hidden plots cost websocket traffic and server time for nothing
        # (each pane remembers the state version it last drew and catches up when shown).
        panes = {1: self.map, 2: self.train, 3: self.simulate, 4: self.reconstruct}
        for index, pane in panes.items():
            if index != self.tabs.active:
                continue
            try:
                pane.refresh()
            except Exception as err:  # a drawing problem must not stop the other panes
                self.error.object, self.error.visible = f"display error in {type(pane).__name__}: {err}", True

    def start_updates(self):
        if self._callback is None:
            self._callback = pn.state.add_periodic_callback(self.tick, period=self.period_ms)
        return self._callback

    def __panel__(self):
        header = pn.Row(pn.pane.Markdown("## latentlab — machine-learned coarse-graining", margin=(0, 10)),
                        self.source, self.path, self.open, self.upload)
        return pn.Column(header, self.message, self.error, self.tabs, sizing_mode="stretch_width")


def create_app(source: str | None = None) -> pn.viewable.Viewable:
    """A dashboard for the current session, with live updates and clean-up when the session ends."""
    dash = Dashboard(source)
    dash.tick()
    dash.start_updates()
    try:
        pn.state.on_session_destroyed(lambda context: dash.s.close())
    except Exception:  # not in a server session (e.g. a notebook)
        pass
    return dash
