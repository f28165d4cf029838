"""Bracketing and narrowing the root of a noisy monotonic function of ln gamma.

The friction calibration (:mod:`latentlab.kinetics.calibration`) looks for the friction at which a
model's kinetic observable equals the reference's: a root of ``f(y)``, ``y = +-ln gamma``, where each
evaluation of ``f`` is a short simulation with a standard error.  :func:`search` brackets the root in
steps of :data:`STEP` and narrows the bracket by safeguarded regula falsi until it is no wider than the
root's own standard error (:func:`sigma_y`: the reference's error and the simulation noise, carried
through the bracket's slope); :func:`root_from_points` interpolates the root inside the final bracket.
The evaluations are plain dicts ``{"y", "f", "sigma_f", ...}`` (``"gamma"`` too for :func:`monotonic`).

References
----------
Kramers, "Brownian motion in a field of force and the diffusion model of chemical reactions",
Physica 7, 284 (1940) (why ``f`` need not be monotonic: the turnover between the overdamped and the
energy-diffusion regimes).
"""

from __future__ import annotations

import math

import numpy as np

#: Bracketing step on ln gamma (a factor 4 in gamma).
STEP = math.log(4.0)

#: Smallest bracket width on ln gamma worth refining (5 %).
MIN_WIDTH = 0.05


def search(evaluate, y_start: float, y_range, max_evaluations: int, sigma_reference: float = 0.0, *, points=None,
           label: str = "observable", to_gamma=math.exp, units: str = "amu/ps") -> str:
    """Bracket and narrow the root of a noisy increasing function ``f(y)``, ``y = +-ln gamma``.

    ``evaluate(y)`` runs one simulation and appends (or returns) a point ``{"y", "f", "sigma_f", ...}``;
    ``f`` increases with ``y`` on the wanted branch and tends to +infinity at large ``y`` (the slow end of
    the branch).  Steps of :data:`STEP` from ``y_start`` find two adjacent points with ``f < 0 <= f``
    (the largest such pair); safeguarded regula falsi then narrows it until it is no wider than the
    root's standard error (:func:`sigma_y`) or :data:`MIN_WIDTH`.  While every point has ``f >= 0`` the
    search walks towards the smallest ``f`` (down the branch, or up when ``f`` rose towards small ``y``:
    the start lay beyond the turnover); once the smallest ``f`` lies between larger ones (the Kramers
    turnover) the points around it are refined to STEP/4, and if ``f`` stays positive there is no root.

    Parameters
    ----------
    evaluate : callable, float -> dict
    y_start : float
    y_range : (float, float)
        Smallest and largest y to evaluate.
    max_evaluations : int
    sigma_reference : float
        The reference's error of ``f`` (part of the stopping rule).
    points : list, optional
        Filled with the evaluated points (``evaluate``'s return values are appended unless it did so).
    label : str
        Name of the observable, for messages.
    to_gamma : callable
        ``y -> gamma`` for messages.
    units : str
        Units of gamma, for messages.

    Returns
    -------
    str
        Empty when a bracket was found, else why not.
    """
    points = [] if points is None else points
    y_lo, y_hi = float(y_range[0]), float(y_range[1])

    def run(y):
        n = len(points)
        p = evaluate(y)
        if len(points) == n:
            points.append(p)

    run(y_start)
    while len(points) < max_evaluations:
        bracket = find_bracket(points)
        if bracket is not None:
            a, b = bracket
            width = b["y"] - a["y"]
            if width <= max(sigma_y(a, b, sigma_reference), MIN_WIDTH):
                return ""
            y_new = a["y"] - a["f"] * width / (b["f"] - a["f"])
            run(min(max(y_new, a["y"] + 0.15 * width), b["y"] - 0.15 * width))
            continue
        pts = sorted(points, key=lambda q: q["y"])
        if pts[-1]["f"] < 0:  # too fast everywhere tried: towards the slow end of the branch
            y_new = pts[-1]["y"] + STEP
        else:  # every f >= 0 (too slow): towards the smallest f; refine it when it lies between larger ones
            i = int(np.argmin([q["f"] for q in pts]))
            if i == 0:  # f falls towards small y: down the branch
                y_new = pts[0]["y"] - STEP
            elif i == len(pts) - 1:  # f rose towards small y: past the turnover, its minimum lies above
                y_new = pts[-1]["y"] + STEP
            else:
                y_new = _probe_minimum(pts)
            if y_new is None:
                best = min(pts, key=lambda q: q["f"])
                return (f"no friction makes the model's {label} as short as the reference's: the shortest reached is "
                        f"{math.exp(best['f']):.3g} x the reference's, at gamma {to_gamma(best['y']):.4g} {units} (the "
                        "Kramers turnover); the model's barriers or its free-energy surface are too high for this "
                        "reference")
        if y_new is not None and not y_lo - 1e-9 <= y_new <= y_hi + 1e-9:
            # a step past an end of the range: to the end itself, unless it was evaluated already
            edge = y_hi if y_new > y_hi else y_lo
            if all(abs(q["y"] - edge) > 1e-9 for q in points):
                y_new = edge
        if not y_lo - 1e-9 <= y_new <= y_hi + 1e-9:
            closest = min(points, key=lambda q: abs(q["f"]))
            lo, hi = sorted((to_gamma(y_lo), to_gamma(y_hi)))
            return (f"no root in the friction range [{lo:.4g}, {hi:.4g}] {units}: the model's {label} stays "
                    + ("shorter" if pts[-1]["f"] < 0 else "longer") + " than the reference's (closest: "
                    f"{math.exp(closest['f']):.3g} x at gamma {to_gamma(closest['y']):.4g}); widen the range or check "
                    "the model")
        run(y_new)
    return "" if find_bracket(points) is not None else (
        f"no bracket of the root within {max_evaluations} simulations; allow more or start nearer")



def root_from_points(points, sigma_reference: float = 0.0) -> dict | None:
    """The root of ``f`` by linear interpolation inside the final bracket (:func:`search`), and its error.

    Returns
    -------
    dict or None
        ``y`` (root), ``sigma_y`` (its standard error, :func:`sigma_y`), ``slope`` (``df/dy`` of the bracket),
        ``width``, ``u`` (position of the root in the bracket, 0..1), ``low`` and ``high`` (the two points);
        None without a bracket.
    """
    bracket = find_bracket(points)
    if bracket is None:
        return None
    a, b = bracket
    width = b["y"] - a["y"]
    u = -a["f"] / (b["f"] - a["f"])
    return {"y": a["y"] + u * width, "sigma_y": sigma_y(a, b, sigma_reference), "slope": (b["f"] - a["f"]) / width,
            "width": width, "u": u, "low": a, "high": b}


def find_bracket(points):
    """Adjacent evaluations (in y) with f < 0 then f >= 0: the largest such pair, or None."""
    pts = sorted(points, key=lambda q: q["y"])
    found = [(p, q) for p, q in zip(pts, pts[1:])
             if np.isfinite(p["f"]) and np.isfinite(q["f"]) and p["f"] < 0 <= q["f"]]
    return found[-1] if found else None


def _noise(p) -> float:
    s = p["sigma_f"]
    return float(s) if s is not None and np.isfinite(s) else 0.0


def _diff_sigma(p, q) -> float:
    return math.hypot(_noise(p), _noise(q))


def sigma_y(a, b, sigma_ref: float) -> float:
    """Standard error of the root on y from the reference's error and the simulation noise, via the bracket slope."""
    slope = (b["f"] - a["f"]) / (b["y"] - a["y"])
    u = -a["f"] / (b["f"] - a["f"])
    s_mod = (1 - u) * _noise(a) + u * _noise(b)
    return float(math.hypot(sigma_ref, s_mod) / abs(slope)) if slope != 0 else math.inf


def _probe_minimum(pts):
    """A y between the smallest-f evaluation and a neighbour not yet resolved to STEP/4, or None."""
    i = int(np.argmin([p["f"] for p in pts]))
    candidates = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(pts) and abs(pts[j]["y"] - pts[i]["y"]) > STEP / 4 + 1e-9:
            candidates.append((pts[j]["f"], 0.5 * (pts[i]["y"] + pts[j]["y"])))
    if not candidates:
        return None
    return min(candidates)[1]


def check_monotonic(points):
    """Whether f is monotonic in gamma beyond noise, and the gamma of an interior minimum of f."""
    pts = sorted(points, key=lambda q: q["gamma"])
    ups = downs = False
    for p, q in zip(pts, pts[1:]):
        diff = q["f"] - p["f"]
        tol = 2 * _diff_sigma(p, q)
        ups |= diff > tol
        downs |= diff < -tol
    if ups and downs:
        i = int(np.argmin([p["f"] for p in pts]))
        return False, float(pts[i]["gamma"])
    return True, None
