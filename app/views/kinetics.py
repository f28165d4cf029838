"""The Kinetics view of the Simulate tab: the model's ACFs and implied timescales filling in next to the reference's,
the MFPT and tau_int tables, and friction calibration (when the library has it)."""

from __future__ import annotations

import numpy as np
import panel as pn
from bokeh.models import ColumnDataSource

from .common import COLORS, alert, changed_since_drawn, fmt, make_figure, show_error

#: Implied timescales drawn (slowest first).
N_TIMESCALES = 3

CALIBRATE_MISSING = ("Friction calibration (latentlab.kinetics.calibrate, 'latentlab calibrate') is not in this "
                     "version of latentlab yet; the button works once it is.")
CALIBRATE_HELP = ("Find the friction gamma at which the model's chosen observable matches the reference's "
                  "(latentlab.kinetics.calibrate: about a dozen short simulations, minutes). The calibrated "
                  "friction is stored in the model and used by the next simulation.")


class KineticsPane(pn.viewable.Viewer):
    """ACFs, implied timescales vs lag, MFPT and tau_int tables: model (solid, filling in) vs reference (dashed)."""

    def __init__(self, session, **params):
        super().__init__(**params)
        self.s = session
        self.header = pn.pane.Markdown("### Kinetics: model vs reference", margin=(10, 5, 0, 5))
        self.info = pn.pane.Markdown("", sizing_mode="stretch_width")
        self.tables = pn.pane.Markdown("", width=460)
        self.error = alert(kind="warning")
        self._build_calibration(session.kinetics.available())
        self.acf = self._acf_figure()
        self.acf_holder = pn.Row(self.acf)
        self.its = make_figure("implied timescales (reference with 95 % interval)", x_axis_label="lag (ps)",
                               y_axis_label="timescale (ps)", x_axis_type="log", y_axis_type="log", width=420,
                               height=260)
        self.diag_src = ColumnDataSource({"x": [], "y": []})
        self.its.line("x", "y", source=self.diag_src, color="gray", line_dash="dotted", legend_label="= lag")
        self.its.legend.label_text_font_size = "8pt"
        self.ref_its_src = ColumnDataSource({"lag": [], "ts": [], "low": [], "high": [], "color": []})
        self.its.segment(x0="lag", y0="low", x1="lag", y1="high", source=self.ref_its_src, color="color", line_width=2)
        self.its.scatter("lag", "ts", source=self.ref_its_src, color="color", size=6, legend_label="reference")
        self.model_its_src = ColumnDataSource({"lag": [], "ts": [], "color": []})
        self.its.scatter("lag", "ts", source=self.model_its_src, color="color", size=9, marker="triangle",
                         fill_alpha=0.3, legend_label="model")
        self.acf_srcs: dict[str, tuple] = {}
        self._names: tuple = ()
        self._version = -1

    @staticmethod
    def _acf_figure():
        return make_figure("autocorrelation (reference dashed, model solid)", x_axis_label="lag (ps)",
                           x_axis_type="log", width=420, height=260)

    def _build_calibration(self, available: bool) -> None:
        k = self.s.kinetics
        self.target = pn.widgets.Select(label="calibrate on", options=list(k.param.target.objects), value=k.target,
                                        width=160, disabled=not available)
        self.target.param.watch(lambda e: setattr(k, "target", e.new), "value")
        self.dynamics = pn.widgets.Select(label="dynamics", options=list(k.param.dynamics.objects), value=k.dynamics,
                                          width=110, disabled=not available)
        self.dynamics.param.watch(lambda e: setattr(k, "dynamics", e.new), "value")
        self.friction_model = pn.widgets.Select(label="friction", options=list(k.param.friction_model.objects),
                                                value=k.friction_model, width=110, disabled=not available)
        self.friction_model.param.watch(lambda e: setattr(k, "friction_model", e.new), "value")
        self.calibrate = pn.widgets.Button(label="Calibrate friction", disabled=True, width=150,
                                           description=CALIBRATE_HELP if available else CALIBRATE_MISSING)
        self.stop_calibration = pn.widgets.Button(label="Stop calibration", disabled=True, width=130)
        self.calibrate.on_click(lambda e: k.calibrate())
        self.stop_calibration.on_click(lambda e: k.stop_calibration())
        self.calibration_text = pn.pane.Markdown("", width=460)
        self._available = available

    def _ensure_acf_lines(self, names) -> bool:
        """A new figure for new coordinates (shown by the caller once its sources hold data); True if new."""
        names = tuple(names)
        if names == self._names:
            return False
        self.acf = self._acf_figure()
        self.acf_srcs = {}
        for i, name in enumerate(names):
            color = COLORS[i % len(COLORS)]
            ref = ColumnDataSource({"lag": [], "acf": []})
            mod = ColumnDataSource({"lag": [], "acf": []})
            self.acf.line("lag", "acf", source=ref, color=color, line_dash="dashed", legend_label=f"{name} reference")
            self.acf.line("lag", "acf", source=mod, color=color, line_width=2, legend_label=f"{name} model")
            self.acf_srcs[name] = (ref, mod)
        self.acf.legend.label_text_font_size = "7pt"
        self.acf.legend.background_fill_alpha = 0.4
        self.acf.legend.location = "bottom_left"
        self._names = names
        return True

    def refresh(self):
        k = self.s.kinetics
        waiting = changed_since_drawn(self, k)
        self.calibrate.disabled = not self._available or k.calibrating or self.s.train.model is None
        if waiting is None:
            return
        ref, mod = k.reference or {}, k.model or {}
        show_error(self.error, "; ".join(x for x in (ref.get("error"), mod.get("error"), k.error) if x))
        self.stop_calibration.disabled = not k.calibrating
        self.calibration_text.object = self._calibration_text(k, waiting)
        self.info.object = self._info_text(ref, mod)
        self.tables.object = self._tables_text(k)
        names = list((ref.get("tau_int_ps") or mod.get("tau_int_ps") or {}).keys())
        if names:
            new = self._ensure_acf_lines(names)
            self._draw_acfs(ref.get("acf"), mod.get("acf"))
            if new:
                self.acf_holder.objects = [self.acf]
        self._draw_its(ref.get("its"), mod.get("its"))

    def _draw_acfs(self, ref_acf, mod_acf) -> None:
        for name, (ref_src, mod_src) in self.acf_srcs.items():
            for curves, src in ((ref_acf, ref_src), (mod_acf, mod_src)):
                if curves and name in curves:
                    lag = np.asarray(curves["lags_ps"], dtype=float)
                    ok = lag > 0  # a log axis
                    src.data = {"lag": lag[ok], "acf": np.asarray(curves[name], dtype=float)[ok]}
                elif len(src.data["lag"]):
                    src.data = {"lag": [], "acf": []}

    def _draw_its(self, ref_its, mod_its) -> None:
        rows, lags_all = {"lag": [], "ts": [], "low": [], "high": [], "color": []}, []
        if ref_its and ref_its.get("lags_ps"):
            for lag, ts, iv in zip(ref_its["lags_ps"], ref_its["timescales_ps"], ref_its["intervals_ps"]):
                for j in range(min(N_TIMESCALES, len(ts))):
                    if ts[j] is None or not ts[j] > 0:
                        continue
                    lo, hi = (iv[j] if iv and iv[j] and None not in iv[j] else (ts[j], ts[j]))
                    for key, value in (("lag", lag), ("ts", ts[j]), ("low", lo), ("high", hi), ("color", COLORS[j])):
                        rows[key].append(value)
            lags_all += list(ref_its["lags_ps"])
        self.ref_its_src.data = rows
        model_rows = {"lag": [], "ts": [], "color": []}
        if mod_its and mod_its.get("lags_ps"):
            for lag, ts in zip(mod_its["lags_ps"], mod_its["timescales_ps"]):
                for j in range(min(N_TIMESCALES, len(ts))):
                    if ts[j] is not None and ts[j] > 0:
                        model_rows["lag"].append(lag)
                        model_rows["ts"].append(ts[j])
                        model_rows["color"].append(COLORS[j])
            lags_all += list(mod_its["lags_ps"])
        self.model_its_src.data = model_rows
        if lags_all:
            self.diag_src.data = {"x": [min(lags_all), max(lags_all)], "y": [min(lags_all), max(lags_all)]}

    @staticmethod
    def _info_text(ref: dict, mod: dict) -> str:
        if not ref and not mod:
            return "_starts with the simulation: the reference is analysed once (seconds), the model every few seconds_"
        parts = []
        if ref and "error" not in ref:
            parts.append(f"reference: {ref.get('n_frames', 0):,} frames every {fmt(ref.get('dt_ps'))} ps, "
                         f"MSM lag {fmt(ref.get('lag_ps'))} ps, basins: {ref.get('basin_set') or 'none'}")
        elif not ref:
            parts.append("reference: _analysing..._")
        if mod and "error" not in mod:
            parts.append(f"model: {mod.get('walkers')} walkers × {fmt(mod.get('simulated_ps'))} ps recorded every "
                         f"{fmt(mod.get('spacing_ps'))} ps; tau_int and MFPTs at {fmt(mod.get('analysis_dt_ps'))} ps")
        elif not mod:
            parts.append("model: _waiting for enough frames_")
        notes = [w for w in (mod.get("warnings") or [])[:2] if not w.startswith("strided")]
        return "  \n".join(parts + [f"_{w}_" for w in notes])

    @staticmethod
    def _tables_text(k) -> str:
        lines = []
        tau = k.tau_rows()
        if tau:
            lines += ["| coordinate | tau_int reference (ps) | model (ps) | model/ref |", "|---|---:|---:|---:|"]
            lines += [f"| {r['coordinate']} | {fmt(r['reference_ps'])} | {fmt(r['model_ps'])} | "
                      f"{fmt(r['ratio'], '.2f')} |" for r in tau]
        mfpt = [r for r in k.mfpt_rows() if r["reference_ps"] is not None or r["model_ps"] is not None]
        if mfpt:
            lines += ["", "| MFPT | reference (ps) | model (ps) | model/ref |", "|---|---:|---:|---:|"]
            for r in mfpt:
                ref = (f"{fmt(r['reference_ps'])} ± {fmt(r['reference_stderr_ps'], '.2g')} "
                       f"({r['reference_transitions'] or 0})")
                mod = f"{fmt(r['model_ps'])} ± {fmt(r['model_stderr_ps'], '.2g')} ({r['model_transitions'] or 0})"
                lines.append(f"| {r['pair']} | {ref} | {mod} | {fmt(r['ratio'], '.2f')} |")
            lines.append("\n_± standard error (transitions counted)_")
        return "\n".join(lines)

    @staticmethod
    def _calibration_text(k, waiting: str) -> str:
        lines = [waiting or k.status] if (waiting or k.status) else []
        c = k.calibration
        if c:
            if c.get("converged"):
                iv = c.get("gamma_interval_95") or [None, None]
                units = (c.get("settings") or {}).get("gamma_units", "amu/ps")
                lines.append(f"**calibrated friction {fmt(c['gamma'], '.4g')} {units}** (95 % {fmt(iv[0], '.3g')}"
                             f"-{fmt(iv[1], '.3g')}) on {(c.get('target') or {}).get('kind', '')}")
            else:
                lines.append(f"**no friction fits:** {c.get('message', '')}")
            rows = ((c.get("check") or {}).get("rows") or [])[:8]
            if rows:
                lines += ["", "| check | reference (ps) | model (ps) | model/ref | used |", "|---|---:|---:|---:|---|"]
                lines += [f"| {r['kind']} {r['name']} | {fmt(r['reference'])} | {fmt(r['model'])} | "
                          f"{fmt(r['ratio'], '.2f')} | {'yes' if r['used'] else ''} |" for r in rows]
        return "\n".join(lines)

    def __panel__(self):
        calibration = pn.Column(pn.Row(self.target, self.dynamics, self.friction_model),
                                pn.Row(self.calibrate, self.stop_calibration), self.calibration_text)
        return pn.Column(self.header, self.info, self.error,
                         pn.Row(self.acf_holder, self.its, pn.Column(self.tables, calibration)),
                         sizing_mode="stretch_width")
