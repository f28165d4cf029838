"""Named basins: boxes in Q, for first-passage times and for reading MSM states.

Spec grammar (the ``--basins`` option)::

    SPEC   :=  BASIN ( ";" BASIN )*
    BASIN  :=  NAME ":" COND ( "," COND )*          all conditions must hold (a box)
    COND   :=  VALUE OP COORD OP VALUE  |  COORD OP VALUE  |  VALUE OP COORD
    OP     :=  "<" | "<=" | ">" | ">="                (both operators of a range point the same way)
    VALUE  :=  a number in the coordinate's unit, or a number followed by "deg" (angles only)
    COORD  :=  a coordinate name of the map (phi, psi, r1, ...) or a derived one (below)

Examples: ``"A:phi<-2.1;B:-2.1<phi<0"``, ``"C5:phi<-120deg; C7eq:-120deg<phi<0"``,
``"alpha_R:phi<0,-90deg<psi<-10deg"``, ``"folded:r13<0.6; unfolded:r13>0.8"``.
A NAME is any text without ``:`` and ``;`` (and without ``->``, which joins names in
first-passage keys).  Periodic coordinates (dihedrals) are compared after wrapping to
(-pi, pi]; a range whose lower end is above its upper end wraps through +-pi
(``150deg<phi<-150deg`` is the strip around phi = 180 deg).

Derived coordinates: ``r13`` for a triangle map (coordinates ``r1, r2, cos``), the
distance between its first and third atom, ``r13 = sqrt(r1^2 + r2^2 - 2 r1 r2 cos)``
(law of cosines; for chignolin's built-in map the CA1-CA10 distance, nm).

Basins may overlap.  A first passage A -> B ends on the first frame in B, so a frame
in both counts as B (the target wins); every basin is tested on its own, so adding
a basin never changes the numbers of another pair.

Built-in sets (:data:`BUILTIN`): ``alanine-dipeptide`` (any phi/psi map) and ``chignolin``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from latentlab.validation import fail

#: Built-in basin sets, written in the spec grammar.
BUILTIN = {
    # Ramachandran regions named in issue 12.  The 300 K vacuum reference visits C5 and C7eq;
    # its three frames with phi > 0 sit at phi ~ 178 deg (the C5 basin seen across the +-180 deg
    # boundary), not in the alpha_L / C7ax region near +60 deg.
    "alanine-dipeptide": "C5: phi<-120deg; C7eq: -120deg<phi<0; alpha_R: phi<0, -90deg<psi<-10deg; phi>0: phi>0",
    # CA1-CA10 distance (nm), thresholds from the built-in 6-ns set at 300 K (12,000 frames): one
    # native peak (median 0.52 nm, interquartile range 0.49-0.55 nm, 99th percentile 0.76 nm, max 1.08 nm).
    # folded = inside the native peak (< 0.60 nm, 91 % of frames); unfolded = well outside it
    # (> 0.80 nm, 0.6 % of frames, reached only in short fraying excursions in this set).
    "chignolin": "folded: r13<0.60; unfolded: r13>0.80",
}

#: The built-in chignolin map (triangle of CA1, CA6, CA10).
CHIGNOLIN_MAPS = ("triangle:name CA and (resid 0 5 9)",)

_OPS = re.compile(r"(<=|>=|<|>)")
_NUMBER = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(deg|rad)?\s*$")


@dataclass(frozen=True)
class Condition:
    """``low < coordinate < high`` (infinite ends allowed; ``low > high`` wraps for periodic ones)."""

    coordinate: str
    low: float
    high: float
    text: str


@dataclass(frozen=True)
class Basin:
    """A named box in Q: all conditions hold."""

    name: str
    conditions: tuple

    @property
    def text(self) -> str:
        return ", ".join(c.text for c in self.conditions)


@dataclass(frozen=True)
class BasinSet:
    """Named basins for one set of coordinates.

    Attributes
    ----------
    basins : tuple of Basin
    spec : str
        The spec they were parsed from.
    label : str
        Built-in name or "user".
    """

    basins: tuple
    spec: str
    label: str = "user"

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.basins]

    def describe(self) -> dict:
        """``{name: "conditions"}``."""
        return {b.name: b.text for b in self.basins}

    def masks(self, trajectories) -> dict:
        """Membership of every frame: ``{name: [bool array (n_frames_i,) per trajectory]}``."""
        out = {b.name: [] for b in self.basins}
        for seg in trajectories.segments:
            values = coordinate_values(seg, trajectories.names)
            for b in self.basins:
                out[b.name].append(_inside(b, values, trajectories))
        return out

    def contains(self, q, trajectories_like) -> dict:
        """Membership of points ``q`` shape=(n, n_cg): ``{name: bool array (n,)}``."""
        values = coordinate_values(np.atleast_2d(np.asarray(q, dtype=np.float64)), trajectories_like.names)
        return {b.name: _inside(b, values, trajectories_like) for b in self.basins}


def derived_names(names) -> list[str]:
    """Derived coordinates available for a map with these coordinate names."""
    names = list(names)
    return ["r13"] if {"r1", "r2", "cos"} <= set(names) and "r13" not in names else []


def coordinate_values(q: np.ndarray, names) -> dict:
    """``{name: (n_frames,)}`` for the map's coordinates and the derived ones."""
    names = list(names)
    values = {n: q[:, i] for i, n in enumerate(names)}
    if "r13" in derived_names(names):
        r1, r2, c = values["r1"], values["r2"], values["cos"]
        values["r13"] = np.sqrt(np.maximum(r1 * r1 + r2 * r2 - 2.0 * r1 * r2 * c, 0.0))
    return values


def _inside(basin: Basin, values: dict, trajectories) -> np.ndarray:
    n = len(next(iter(values.values())))
    mask = np.ones(n, dtype=bool)
    periodic = dict(zip(trajectories.names, trajectories.periodic))
    for c in basin.conditions:
        x = values[c.coordinate]
        if periodic.get(c.coordinate, False) and c.low > c.high:
            mask &= (x > c.low) | (x < c.high)
        else:
            mask &= (x > c.low) & (x < c.high)
    return mask


def builtin_for(trajectories) -> str | None:
    """Name of the built-in basin set that fits these coordinates, or None."""
    names = tuple(trajectories.names)
    if names == ("phi", "psi") and all(trajectories.periodic):
        return "alanine-dipeptide"
    if names == ("r1", "r2", "cos"):
        ds = (trajectories.dataset or "").lower()
        spec = (trajectories.map_spec or "").strip()
        if "chignolin" in ds or spec in CHIGNOLIN_MAPS:
            return "chignolin"
    return None


def resolve_basins(spec, trajectories, argument: str = "--basins") -> BasinSet | None:
    """A :class:`BasinSet` from a spec, a built-in name, ``"auto"`` (the built-in set that fits, if any), or None.

    None and ``"none"`` mean no basins.

    Parameters
    ----------
    spec : str, BasinSet or None
    trajectories : Trajectories
        Supplies coordinate names, periodicity and units for validation.
    """
    if isinstance(spec, BasinSet):
        return spec
    if spec is None:
        return None
    if str(spec).strip().lower() == "auto":
        name = builtin_for(trajectories)
        return None if name is None else parse_basins(BUILTIN[name], trajectories, argument, label=name)
    text = str(spec).strip()
    if text.lower() == "none":
        return None
    if text in BUILTIN:
        return parse_basins(BUILTIN[text], trajectories, argument, label=text)
    return parse_basins(text, trajectories, argument)


def parse_basins(spec: str, trajectories, argument: str = "--basins", label: str = "user") -> BasinSet:
    """Parse a basin spec (module docstring) against the coordinates of ``trajectories``.

    Raises ``ValueError`` naming the bad part and the fix.
    """
    names = list(trajectories.names)
    periodic = dict(zip(names, trajectories.periodic))
    units = dict(zip(names, trajectories.units))
    available = names + derived_names(names)
    example = 'e.g. "A:phi<-2.1;B:-2.1<phi<0" (see docs/kinetics.md)'
    if not isinstance(spec, str) or not spec.strip():
        fail(argument, "is empty", f"give basins as NAME:CONDITION[,CONDITION];..., {example}, "
             f"or one of {', '.join(BUILTIN)}")
    basins = []
    for part in [p for p in spec.split(";") if p.strip()]:
        if ":" not in part:
            fail(argument, f"basin {part.strip()!r} has no ':'", f"write NAME:CONDITIONS, {example}")
        name, body = part.split(":", 1)
        name = name.strip()
        if not name or "->" in name:
            fail(argument, f"basin name {name!r} is empty or contains '->'", "give each basin a short name such as C5")
        conds = [c for c in re.split(r",|&", body) if c.strip()]
        if not conds:
            fail(argument, f"basin {name!r} has no condition", f"add at least one, {example}")
        basins.append(Basin(name, tuple(_condition(c, name, available, periodic, units, argument) for c in conds)))
    if len(basins) < 2:
        fail(argument, f"defines {len(basins)} basin(s)", "define at least two (first passages go from one to another)")
    seen = set()
    for b in basins:
        if b.name in seen:
            fail(argument, f"basin {b.name!r} is defined twice", "give every basin its own name")
        seen.add(b.name)
    return BasinSet(tuple(basins), spec, label)


def _value(text: str, coord: str, periodic: dict, units: dict, argument: str, where: str) -> float:
    m = _NUMBER.match(text)
    if not m:
        fail(argument, f"{where}: {text.strip()!r} is not a number",
             "write numbers such as -2.1, 0.6 or -120deg (deg for angles)")
    value = float(m.group(1))
    if m.group(2) == "deg":
        if not (periodic.get(coord, False) or units.get(coord) == "rad"):
            fail(argument, f"{where}: 'deg' on {coord}, which is not an angle", f"give {coord} in {units.get(coord, 'its unit')}")
        value = math.radians(value)
    if periodic.get(coord, False) and not -math.pi - 1e-9 <= value <= math.pi + 1e-9:
        fail(argument, f"{where}: {text.strip()} is outside (-180, 180] deg", "give angles in (-pi, pi] rad or (-180, 180] deg")
    return value


def _condition(text: str, basin: str, available, periodic, units, argument) -> Condition:
    where = f"basin {basin!r}, condition {text.strip()!r}"
    parts = [p.strip() for p in _OPS.split(text)]
    tokens, ops = parts[0::2], parts[1::2]
    if len(ops) not in (1, 2) or any(not t for t in tokens):
        fail(argument, f"{where} is not of the form a<x<b, x<b or x>a", 'write e.g. "-2.1<phi<0" or "r13>0.8"')
    coords = [i for i, t in enumerate(tokens) if t in available]
    if len(coords) != 1:
        unknown = [t for t in tokens if not _NUMBER.match(t)]
        what = f"unknown coordinate {unknown[0]!r}" if unknown else "no coordinate"
        fail(argument, f"{where}: {what}", f"use one of {', '.join(available)}")
    k = coords[0]
    coord = tokens[k]
    low, high = -math.inf, math.inf
    if len(ops) == 2:
        if k != 1:
            fail(argument, f"{where}: the coordinate must sit between the two numbers", 'write e.g. "-2.1<phi<0"')
        less = [o.startswith("<") for o in ops]
        if less[0] != less[1]:
            fail(argument, f"{where}: the two comparisons point in different directions", 'write e.g. "-2.1<phi<0"')
        a = _value(tokens[0], coord, periodic, units, argument, where)
        b = _value(tokens[2], coord, periodic, units, argument, where)
        low, high = (a, b) if less[0] else (b, a)
        if low >= high and not periodic.get(coord, False):
            fail(argument, f"{where}: the range is empty ({low:g} >= {high:g})", "put the smaller number first")
        if low == high:
            fail(argument, f"{where}: the range is empty", "give two different numbers")
    else:
        op = ops[0]
        other = tokens[1 - k]
        v = _value(other, coord, periodic, units, argument, where)
        # x < v  or  v > x  -> upper bound; x > v or v < x -> lower bound
        upper = (op.startswith("<") and k == 0) or (op.startswith(">") and k == 1)
        low, high = (-math.inf, v) if upper else (v, math.inf)
    return Condition(coord, low, high, text.strip().replace(" ", ""))
