"""One figure for the kinetics: ACFs overlaid, implied timescales vs lag, CK test, MFPT table."""

from __future__ import annotations

import numpy as np


def _series(results) -> dict:
    from latentlab.kinetics.analysis import KineticsComparison, KineticsResult

    if isinstance(results, KineticsComparison):
        return {"reference": results.reference, "model": results.model}
    if isinstance(results, KineticsResult):
        return {"": results}
    return dict(results)


#: One line style and one marker per data set (reference, model, ...).
_STYLES = ["--", "-", ":", "-."]
_MARKERS = ["s", "o", "^", "v"]


def _prefix(label: str) -> str:
    return f"{label} " if label else ""


def _plot_acfs(ax, series: dict, colors: list) -> None:
    """ACFs against lag (ps): one colour per coordinate, one line style per data set."""
    for j, (label, res) in enumerate(series.items()):
        lags = np.asarray(res.acf["lags_ps"])
        for i, (name, rho) in enumerate(res.acf["acf"].items()):
            tau = res.acf["tau_int_ps"][name]
            ax.plot(lags, rho, _STYLES[j % 4], color=colors[i % len(colors)],
                    label=f"{_prefix(label)}{name} (tau_int {tau:.3g} ps)")
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel("lag (ps)")
    ax.set_ylabel("autocorrelation")
    ax.set_title("autocorrelation functions")
    ax.legend(fontsize=7)


def _plot_timescales(ax, series: dict, colors: list, max_timescales: int) -> None:
    """Implied timescales (ps) against lag (ps) with Bayesian 95 % intervals; the unresolved region shaded."""
    top, bottom = 0.0, np.inf
    for j, (label, res) in enumerate(series.items()):
        if res.its_lags_ps.size == 0:
            continue
        lags = res.its_lags_ps
        for k in range(min(max_timescales, res.its_ps.shape[1])):
            y = res.its_ps[:, k]
            lo, hi = res.its_interval_ps[:, k, 0], res.its_interval_ps[:, k, 1]
            err = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
            err = np.where(np.isfinite(err), err, 0.0)
            ax.errorbar(lags, y, yerr=err, fmt=_MARKERS[j % 4] + _STYLES[j % 4], color=colors[k % len(colors)],
                        ms=4, capsize=2, label=f"{_prefix(label)}t{k + 1}")
            top = max(top, float(np.nanmax(np.where(np.isfinite(hi), hi, y))))
            finite = y[np.isfinite(y) & (y > 0)]
            if finite.size:
                bottom = min(bottom, float(finite.min()))
        if res.lag_ps is not None:
            ax.axvline(res.lag_ps, color="0.5", lw=0.8, ls=_STYLES[j % 4])
    if top > 0:
        all_lags = np.concatenate([r.its_lags_ps for r in series.values() if r.its_lags_ps.size] or [np.ones(1)])
        x = np.array([all_lags.min(), all_lags.max()])
        low = 0.5 * min(bottom if np.isfinite(bottom) else x.min(), x.min())
        ax.fill_between(x, x, np.full(2, low), color="0.85", label="timescale < lag (not resolved)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(low, 2.0 * max(top, x.max()))
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("implied timescale (ps)")
    ax.set_title("implied timescales (Bayesian MSM, 95 %)")
    ax.legend(fontsize=7)


def _plot_ck(ax, series: dict, colors: list) -> None:
    """Chapman-Kolmogorov test: self-transition probability of each PCCA+ set, predicted and estimated."""
    drawn = False
    for j, (label, res) in enumerate(series.items()):
        ck = res.ck
        if not ck or "predicted" not in ck:
            continue
        lags = np.asarray(ck["lags_ps"])
        pred, est = np.asarray(ck["predicted"]), np.asarray(ck["estimated"])
        piv, eiv = np.asarray(ck["predicted_interval"]), np.asarray(ck["estimated_interval"])
        for s in range(pred.shape[1]):
            c = colors[s % len(colors)]
            ax.plot(lags, pred[:, s, s], _STYLES[j % 4], color=c, label=f"{_prefix(label)}set {s + 1} predicted")
            ax.fill_between(lags, piv[:, s, s, 0], piv[:, s, s, 1], color=c, alpha=0.15)
            ax.errorbar(lags, est[:, s, s], yerr=np.abs(np.vstack([est[:, s, s] - eiv[:, s, s, 0],
                                                                    eiv[:, s, s, 1] - est[:, s, s]])),
                        fmt=_MARKERS[j % 4], color=c, ms=4, capsize=2, label=f"{_prefix(label)}set {s + 1} estimated")
            drawn = True
    ax.set_xlabel("lag time (ps)")
    ax.set_ylabel("P(set -> same set)")
    ax.set_title("Chapman-Kolmogorov test (PCCA+ sets)")
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no CK test", ha="center", va="center", transform=ax.transAxes)


def _mfpt_cell(v) -> str:
    """One MFPT entry (ps) as table text: value +- standard error, or "-"."""
    if v is None or v["mfpt_ps"] is None:
        return "-"
    if v["stderr_ps"] is None:
        return f"{v['mfpt_ps']:.4g}"
    return f"{v['mfpt_ps']:.4g} +- {v['stderr_ps']:.2g}"


def _mfpt_table(ax, series: dict) -> None:
    """Table of the direct MFPTs (ps) of every basin pair, one column per data set, and the transition counts."""
    ax.axis("off")
    keys = []
    for res in series.values():
        for k in res.mfpt:
            if k not in keys:
                keys.append(k)
    if not keys:
        ax.text(0.5, 0.5, "no basins", ha="center", va="center", transform=ax.transAxes)
        return
    header = ["A -> B"] + [f"{label or 'MFPT'} (ps)" for label in series] + ["transitions"]
    rows = [[k] + [_mfpt_cell(res.mfpt.get(k)) for res in series.values()]
            + [" / ".join(str(r.mfpt.get(k, {}).get("transitions", "-")) for r in series.values())] for k in keys]
    table = ax.table(cellText=rows, colLabels=header, loc="upper center", cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.scale(1.0, 1.3)
    ax.set_title("mean first-passage times (direct, block-bootstrap SE)")


def plot_kinetics(results, out: str, title: str | None = None, max_timescales: int = 3) -> str:
    """Write the kinetics figure to ``out`` (PNG).

    Parameters
    ----------
    results : KineticsResult, KineticsComparison or dict {label: KineticsResult}
    out : str
        File to write (the caller makes it atomic).
    title : str, optional
    max_timescales : int
        Implied timescales drawn per data set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = _series(results)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    _plot_acfs(axes[0, 0], series, colors)
    _plot_timescales(axes[0, 1], series, colors, max_timescales)
    _plot_ck(axes[1, 0], series, colors)
    _mfpt_table(axes[1, 1], series)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110, format="png")
    plt.close(fig)
    return out
