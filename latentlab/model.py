"""A trained (or exact) CG model: everything latent dynamics needs, in one typed object and one file.

:class:`CGModel` holds

* the **latent space**: the map (its spec, and its full definition when it can be stored, so a PCA map
  fitted to data is the same map when the model is loaded) and its coordinates' names, units,
  periodicity and bounds;
* the **potential** ``V(Q)`` (kJ/mol, a torch module: :class:`latentlab.potentials.CGPotential` or the
  exact :class:`latentlab.potentials.ExactPotential` of an analytic system) and its **convention**
  (:mod:`latentlab.conventions`);
* the **effective mass** ``A(Q)`` (:mod:`latentlab.maps.mass_model`) with the map's consistency score;
* the **temperature(s)** V belongs to, **start points** (data Q to start walkers from), an optional
  calibrated **friction** (amu/ps), and the **training record** (kind, settings, history, which frames
  trained and validated it) and library **versions**.

Every trainer returns one (:class:`latentlab.training.Trainer`); :class:`latentlab.simulation.Simulation`
runs one.  ``save(path)`` / ``CGModel.load(path)`` write and read a ``torch.save`` archive of plain data,
read back with ``weights_only=True`` (no pickled code is ever executed).  Files of latentlab 0.1.0
(format version 1) still load.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field, replace

import torch

from latentlab.conventions import canonical
from latentlab.dynamics import check_dynamics, check_friction_model
from latentlab.io import atomic_output
from latentlab.maps.base import Coordinate, LatentCoordinates
from latentlab.maps.mass_model import MassModel, mass_model_from_dict
from latentlab.units import KB
from latentlab.validation import as_tensor, check_positive, fail

MODEL_FORMAT = "latentlab-model"
MODEL_FORMAT_VERSION = 2


def versions() -> dict:
    """Versions of the libraries that produced a file."""
    import numpy

    from latentlab import __version__

    # str(): torch.__version__ is a TorchVersion, which a weights_only load refuses.
    return {"latentlab": str(__version__), "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": str(platform.python_version())}


def check_input_file(path, argument: str, kinds, wanted: str, command: str) -> str:
    """The path of an existing file written by ``command`` (one of the file ``kinds`` of :mod:`latentlab.data.sniff`).

    Raises
    ------
    FileNotFoundError
        ``"argument: PATH does not exist. Fix: pass the file written by 'command --out'"``.
    ValueError
        When the file is of another kind (what it is, and where it belongs).
    """
    from latentlab.data.sniff import check_kind

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{argument}: {path} does not exist. Fix: pass the file written by '{command} --out'")
    check_kind(path, kinds, argument, wanted, f"pass a file written by {command}")
    return path


@dataclass(repr=False)
class CGModel(LatentCoordinates):
    """A CG model ready for latent dynamics (see the module docstring).

    Attributes
    ----------
    potential : torch.nn.Module
        ``V(Q[, T])``: ``(n_walkers, n_cg)`` -> ``(n_walkers,)`` kJ/mol.
    mass : MassModel
        ``A(Q)``: ``(n_walkers, n_cg)`` -> ``(n_walkers, n_cg, n_cg)``, Q-unit^2/amu.
    coordinates : tuple of Coordinate
        Name, unit, periodicity and bounds of each latent coordinate.
    temperature : float, K
        Temperature of V (the reference temperature of a temperature-conditioned V).
    convention : str
        Which V (:mod:`latentlab.conventions`).
    map_spec : str or None
    map_definition : dict or None
        :meth:`latentlab.maps.CGMap.to_dict` of the map, when it can be stored.
    start_points : torch.Tensor, shape=(n_points, n_cg), float64, or None
        Latent states (from data) to start walkers from.
    temperatures : list of float or None
        Training temperatures of a temperature-conditioned V.
    friction : float or None, amu/ps (1/ps for atomic friction)
        Calibrated friction (used by simulations unless another one is asked for).
    training : dict
        The training record: ``kind``, ``settings``, ``history``, ``best_val_loss``, ``stopped``, ``method``,
        ``dataset``, ``frames`` (training/validation/hold-out frame ranges), ...
    consistency : dict or None
        The map's consistency score (level-set and binned spread of A).
    versions : dict
    dynamics : {"langevin", "brownian"}
        The dynamics the friction belongs to (underdamped latent Langevin or its overdamped limit).
    friction_model : {"coordinate", "atomic"}
        Friction ``-gamma dQ/dt`` (gamma in amu/ps) or the same collision rate on every atom (1/ps)
        (:mod:`latentlab.dynamics.langevin`).
    """

    potential: torch.nn.Module
    mass: MassModel
    coordinates: tuple
    temperature: float
    convention: str = "consistent"
    map_spec: str | None = None
    map_definition: dict | None = None
    start_points: torch.Tensor | None = None
    temperatures: list | None = None
    friction: float | None = None
    training: dict = field(default_factory=dict)
    consistency: dict | None = None
    versions: dict = field(default_factory=versions)
    dynamics: str = "langevin"
    friction_model: str = "coordinate"

    def __post_init__(self):
        self.coordinates = tuple(self.coordinates)
        self.temperature = check_positive(self.temperature, "temperature", "K")
        self.convention = canonical(self.convention, warn=False)
        check_friction_model(self.friction_model)
        check_dynamics(self.dynamics)
        if self.start_points is not None:
            self.start_points = as_tensor(self.start_points, "start_points", dtype=torch.float64).reshape(-1, self.n_cg)
        self.potential.eval()

    # ------------------------------------------------------------------ construction
    @classmethod
    def exact(cls, system, convention: str = "consistent", start_points=None) -> "CGModel":
        """The exact model of an analytic system (:class:`latentlab.testing.ThreeAtomSystem`): its PMF and A(Q)."""
        from latentlab.maps.mass_model import closed_form_mass
        from latentlab.potentials.exact import ExactPotential

        cg_map = system.cg_map()
        return cls(ExactPotential(system, convention), closed_form_mass(cg_map, system.masses_tensor()),
                   cg_map.coordinates, system.temperature, convention, cg_map.spec, cg_map.to_dict(), start_points,
                   training={"kind": "exact", "system": system.name})

    # ------------------------------------------------------------------ latent space
    @property
    def kT(self) -> float:
        """Thermal energy at the model's temperature, kJ/mol."""
        return KB * self.temperature

    @property
    def kind(self) -> str:
        """How the model was made: ``force-matching``, ``relative-entropy``, ``temperature-matching``, ``exact``, ..."""
        return str(self.training.get("kind", "unknown"))

    def cg_map(self, dataset=None):
        """The map Q = f(q): rebuilt from its stored definition, else from its spec on ``dataset``."""
        from latentlab.maps.spec import map_from_dict

        if self.map_definition is not None:
            return map_from_dict(self.map_definition)
        if dataset is None:
            fail("dataset", f"the model's map {self.map_spec!r} cannot be rebuilt without its data",
                 "pass the data set the model was trained on")
        return dataset.map(self.map_spec)

    # ------------------------------------------------------------------ evaluation
    def energy_function(self, temperature: float | None = None):
        """``Q -> V(Q)`` at ``temperature`` K (default: the model's own) for the sampler.

        A temperature-conditioned V is evaluated at that temperature and an exact potential is rebuilt
        for it; any other V is the potential at its training temperature whatever the simulation's.
        """
        if temperature is None or float(temperature) == self.temperature:
            return self.potential
        at = getattr(self.potential, "at_temperature", None)
        return at(float(temperature)) if at is not None else self.potential

    def temperature_note(self, temperature: float | None) -> str | None:
        """Why V may not describe the system at ``temperature`` K, or None when it does.

        An exact potential is rebuilt for any temperature.  A temperature-conditioned V holds within the
        temperatures it was trained on (5 % either side).  Any other V is a free energy at its training
        temperature and holds there (10 % either side): it includes the entropy of the atoms integrated out
        at that temperature.
        """
        if temperature is None:
            return None
        t = float(temperature)
        if self.temperatures:
            lo, hi = min(self.temperatures), max(self.temperatures)
            if 0.95 * lo <= t <= 1.05 * hi:
                return None
            return (f"V(Q, T) was trained at {', '.join(f'{x:g}' for x in sorted(self.temperatures))} K; "
                    f"{t:g} K lies outside that range, so V is extrapolated there")
        if abs(t / self.temperature - 1.0) <= 0.1 or self.energy_function(t) is not self.potential:  # or rebuilt for t
            return None
        return (f"V(Q) was learned at {self.temperature:g} K; at {t:g} K the walkers sample exp(-V/kT) of the "
                f"{self.temperature:g}-K free-energy surface, which is not the system at {t:g} K (V holds the "
                f"entropy of the atoms integrated out at {self.temperature:g} K). For another temperature train "
                "on data at it, or with --objective temperature-matching on several temperatures")

    def energy(self, Q: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``V(Q)``, ``(n_walkers,)`` kJ/mol."""
        return self.energy_function(temperature)(Q)

    def gradient(self, Q: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
        """``grad_Q V``, ``(n_walkers, n_cg)``."""
        with torch.enable_grad():
            q = Q.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.energy(q, temperature).sum(), q)
        return g

    def to(self, device=None, dtype=None) -> "CGModel":
        """A copy whose potential lives on ``device`` in ``dtype`` (the mass model follows the walkers' dtype)."""
        import copy

        pot = copy.deepcopy(self.potential).to(device=device, dtype=dtype)
        return replace(self, potential=pot)

    def with_dynamics(self, dynamics: str | None = None, friction_model: str | None = None) -> "CGModel":
        """The model set to other dynamics (``"langevin"``/``"brownian"``) or friction model
        (``"coordinate"``/``"atomic"``); None keeps the model's.  A friction in other units is dropped."""
        dynamics, friction_model = dynamics or self.dynamics, friction_model or self.friction_model
        if (dynamics, friction_model) == (self.dynamics, self.friction_model):
            return self
        friction = self.friction if friction_model == self.friction_model else None
        return replace(self, dynamics=dynamics, friction_model=friction_model, friction=friction)

    def describe(self) -> dict:
        """A JSON-ready summary (``latentlab info MODEL``)."""
        t = self.training
        return {"kind": self.kind, "map": self.map_spec, "coordinates": self.names, "units": self.units,
                "periodic": self.periodic, "temperature": self.temperature, "temperatures": self.temperatures,
                "convention": self.convention, "mass_model": self.mass.describe(), "consistency": self.consistency,
                "friction": self.friction, "friction_model": self.friction_model, "dynamics": self.dynamics,
                "method": t.get("method"), "dataset": t.get("dataset"),
                "epochs": len(t.get("history") or []), "best_val_loss": t.get("best_val_loss"),
                "stopped": t.get("stopped"), "frames": t.get("frames"),
                "start_points": 0 if self.start_points is None else int(self.start_points.shape[0]),
                "versions": self.versions}

    def __repr__(self) -> str:
        """One line: how it was made, the map and its coordinates, A(Q), temperature, convention, data."""
        from latentlab.simulation.simfile import dataset_name

        coords = ", ".join(f"{n} ({u})" if u and u != "1" else n for n, u in zip(self.names, self.units))
        data = dataset_name(self.training.get("dataset"))
        trained = f", trained on {data}" if data else ""
        friction = "" if self.friction is None else f", friction {self.friction:g} ({self.friction_model}, {self.dynamics})"
        return (f"CGModel({self.kind}, map {self.map_spec or 'unnamed'}: {coords}; A(Q) {self.mass.kind}, "
                f"{self.temperature:g} K, {self.convention} V{trained}{friction})")

    # ------------------------------------------------------------------ files
    def to_payload(self) -> dict:
        """The plain dictionary stored in a model file (also embedded in training checkpoints)."""
        pot = self.potential
        if hasattr(pot, "from_config"):  # an exact potential: rebuilt from its system's parameters
            potential = {"kind": "exact", "config": pot.config()}
        elif hasattr(pot, "config"):
            potential = {"kind": "mlp", "config": pot.config(),
                         "state_dict": {k: v.detach().cpu() for k, v in pot.state_dict().items()}}
        else:
            fail("potential", f"a {type(pot).__name__} cannot be saved", "save models with a CGPotential or ExactPotential")
        coords = [{"name": c.name, "unit": c.unit, "periodic": c.periodic,
                   "bounds": None if c.bounds is None else [float(c.bounds[0]), float(c.bounds[1])]}
                  for c in self.coordinates]
        return {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "potential": potential,
                "map": {"spec": self.map_spec, "coordinates": coords, "definition": self.map_definition},
                "mass_model": self.mass.to_dict(), "temperature": self.temperature, "temperatures": self.temperatures,
                "convention": self.convention, "friction": self.friction, "friction_model": self.friction_model,
                "dynamics": self.dynamics,
                "start_points": None if self.start_points is None else self.start_points.detach().cpu(),
                "training": self.training, "consistency": self.consistency, "versions": self.versions}

    def save(self, path: str) -> str:
        """Write the model to ``path`` atomically; returns the path."""
        payload = self.to_payload()
        with atomic_output(path) as tmp:
            torch.save(payload, tmp)
        return os.fspath(path)

    @classmethod
    def from_payload(cls, payload, source: str = "model") -> "CGModel":
        """Rebuild a model from a loaded payload (format version 1 of latentlab 0.1.0, or 2)."""
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            fail("model", f"{source} is not a latentlab model file (no '{MODEL_FORMAT}' format tag)",
                 "pass a file written by 'latentlab train' or CGModel.save")
        version = payload.get("format_version")
        if version == 1:
            payload = _upgrade_v1(payload)
        elif version != MODEL_FORMAT_VERSION:
            fail("model", f"{source} has format version {version!r}; this latentlab reads versions 1 and "
                 f"{MODEL_FORMAT_VERSION}", "upgrade latentlab (pip install -U latentlab)")
        try:
            potential = _potential_from_dict(payload["potential"])
            coords = [Coordinate(c["name"], c["unit"], bool(c["periodic"]),
                                 None if c["bounds"] is None else (float(c["bounds"][0]), float(c["bounds"][1])))
                      for c in payload["map"]["coordinates"]]
            mass = mass_model_from_dict(payload["mass_model"])
            return cls(potential, mass, coords, payload["temperature"], payload.get("convention", "consistent"),
                       payload["map"].get("spec"), payload["map"].get("definition"), payload.get("start_points"),
                       payload.get("temperatures"), payload.get("friction"), dict(payload.get("training") or {}),
                       payload.get("consistency"), dict(payload.get("versions") or {}),
                       payload.get("dynamics", "langevin"), payload.get("friction_model", "coordinate"))
        except (KeyError, TypeError, RuntimeError, IndexError) as err:
            fail("model", f"{source} is damaged: its configuration and weights do not fit ({type(err).__name__}: {err})",
                 "re-train or re-save the model")

    @classmethod
    def load(cls, path: str, device=None) -> "CGModel":
        """Load a model file.  FileNotFoundError for a missing file; ValueError naming what is wrong otherwise."""
        path = check_input_file(path, "model", ("latentlab-model", "torch-zip", "zip", "unknown"),
                                "a latentlab model file", "latentlab train")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for truncated / foreign / pickled-code files
            fail("model", f"{path} could not be read as a latentlab model file: it is corrupt, truncated or not a "
                 f"torch archive of plain data ({type(err).__name__})",
                 "pass a file written by 'latentlab train' (re-train if the file was damaged)")
        model = cls.from_payload(payload, path)
        return model.to(device) if device is not None else model


def _potential_from_dict(d: dict) -> torch.nn.Module:
    if d.get("kind") == "exact":
        from latentlab.potentials.exact import ExactPotential

        return ExactPotential.from_config(d["config"])
    if d.get("kind") != "mlp":
        fail("model", f"unknown potential kind {d.get('kind')!r}", "use a model file written by this latentlab")
    from latentlab.potentials.network import CGPotential

    pot = CGPotential(**d["config"])
    weight = d["state_dict"].get("net.0.weight")
    if weight is not None:  # the network in the precision it was trained (and saved) in
        pot.net.to(weight.dtype)
        pot.members.to(weight.dtype)
    pot.load_state_dict(d["state_dict"])
    return pot


#: Keys of a 0.1.0 model's metadata that are not part of its training record.
_V1_MODEL_KEYS = ("map", "names", "units", "periodic", "bounds", "temperature", "kT", "convention", "mass_model",
                  "consistency", "start_Q", "versions", "temperatures", "potential", "energy_unit")


def _upgrade_v1(payload: dict) -> dict:
    """A format-1 payload (latentlab 0.1.0: an untyped ``metadata`` dict) in the format-2 layout."""
    from latentlab.potentials.network import upgrade_state_dict

    meta = dict(payload.get("metadata") or {})
    config = dict(payload["config"])
    n = int(config["n_cg"])
    names = meta.get("names") or config.get("names") or [f"q{i}" for i in range(n)]
    units = meta.get("units") or config.get("units") or ["1"] * n
    periodic = meta.get("periodic") or config.get("periodic") or [False] * n
    bounds = meta.get("bounds") or [None] * n
    coords = [{"name": a, "unit": b, "periodic": bool(c), "bounds": d} for a, b, c, d in zip(names, units, periodic, bounds)]
    training = {k: v for k, v in meta.items() if k not in _V1_MODEL_KEYS}
    settings = dict(training.pop("training", {}) or {})
    training.update(kind=settings.get("kind", "force-matching"), settings=settings, format_version=1)
    return {"potential": {"kind": "mlp", "config": config, "state_dict": upgrade_state_dict(payload["state_dict"])},
            "map": {"spec": meta.get("map"), "coordinates": coords, "definition": None},
            "mass_model": meta["mass_model"], "temperature": meta.get("temperature", config.get("temperature", 300.0)),
            "temperatures": meta.get("temperatures"), "convention": canonical(meta.get("convention") or "consistent", warn=False),
            "friction": None, "start_points": meta.get("start_Q"), "training": training,
            "consistency": meta.get("consistency"), "versions": meta.get("versions") or {}}
