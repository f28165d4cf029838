"""Model files: one self-describing file per trained potential.

A model file is a ``torch.save`` archive of a plain dictionary, read back with
``torch.load(weights_only=True)`` (no pickled code is ever executed)::

    format          "latentlab-model"
    format_version  1
    config          CGPotential constructor arguments (architecture)
    state_dict      weights and buffers (normalisation, walls)
    metadata        map spec, coordinate names/units/periodic/bounds, temperature, kT,
                    convention, force method, effective-mass model (closed form or
                    kernel table, with the map's consistency score), data set,
                    training settings and history, library versions

Everything the sampler needs (V, A(Q), periodicity, bounds, temperature) is in
the file, so ``latentlab simulate`` works without the training data.
"""

from __future__ import annotations

import os
import platform

import torch

from latentlab.io import atomic_output
from latentlab.potentials.model import CGPotential
from latentlab.validation import fail

MODEL_FORMAT = "latentlab-model"
MODEL_FORMAT_VERSION = 1


def versions() -> dict:
    """Versions of the libraries that produced a file."""
    import numpy

    from latentlab import __version__

    # str(): torch.__version__ is a TorchVersion, which a weights_only load refuses.
    return {"latentlab": str(__version__), "torch": str(torch.__version__), "numpy": str(numpy.__version__),
            "python": str(platform.python_version())}


def model_payload(model: CGPotential, metadata: dict | None = None) -> dict:
    """The dictionary stored in a model file (also embedded in training checkpoints)."""
    meta = dict(getattr(model, "metadata", {}) or {})
    meta.update(metadata or {})
    meta.setdefault("versions", versions())
    meta.setdefault("temperature", model.temperature)
    meta.setdefault("names", list(model.names))
    meta.setdefault("units", list(model.units))
    meta.setdefault("periodic", list(model.periodic))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION, "config": model.config(),
            "state_dict": state, "metadata": meta}


def save_model(model: CGPotential, path: str, metadata: dict | None = None) -> str:
    """Write ``model`` and ``metadata`` to ``path`` atomically; returns the path.

    ``metadata`` is merged over ``model.metadata``; it may hold plain Python
    values and tensors (nothing else survives a ``weights_only`` load).
    """
    if not isinstance(model, CGPotential):
        fail("model", f"got {type(model).__name__}", "pass a latentlab.potentials.CGPotential")
    payload = model_payload(model, metadata)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)
    return os.fspath(path)


def model_from_payload(payload, source: str = "model") -> CGPotential:
    """Rebuild a :class:`CGPotential` (with ``.metadata``) from a loaded payload dictionary."""
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        fail("model", f"{source} is not a latentlab model file (no '{MODEL_FORMAT}' format tag)",
             "pass a file written by 'latentlab train' or latentlab.potentials.save_model")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > MODEL_FORMAT_VERSION:
        fail("model", f"{source} has format version {version!r}; this latentlab reads up to {MODEL_FORMAT_VERSION}",
             "upgrade latentlab")
    try:
        model = CGPotential(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, RuntimeError) as err:
        fail("model", f"{source} is damaged: its configuration and weights do not fit ({err})",
             "re-train or re-save the model")
    model.metadata = dict(payload.get("metadata") or {})
    model.eval()
    return model


def load_model(path: str, device=None) -> CGPotential:
    """Load a model file written by :func:`save_model`; the model has ``.metadata``.

    Raises FileNotFoundError for a missing file and ValueError for a corrupt,
    truncated or foreign file (saying which).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model: {path} does not exist. Fix: pass the file written by 'latentlab train --out'")
    if os.path.isdir(path):
        fail("model", f"{path} is a directory", "pass the model file itself")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated / foreign / pickled-code files
        fail("model", f"{path} could not be read as a latentlab model file: it is corrupt, truncated or not a "
             f"torch archive of plain data ({type(err).__name__})",
             "pass a file written by 'latentlab train' (re-train if the file was damaged)")
    model = model_from_payload(payload, path)
    return model.to(device) if device is not None else model

