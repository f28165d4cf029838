"""SIM files: what ``latentlab simulate`` writes (``.npz``, no pickled objects).

Arrays: ``Q (n_records, n_walkers, n_cg)`` float32 in each coordinate's unit, ``time (n_records,)`` ps,
optional extras (``kinetic_temperature_ratio (n_records,)``; ``restarts (n_events, 2)`` int, ``[record, walker]``:
the walker was re-seeded just before that record, so its trajectory restarts there), and ``metadata``: a JSON
string with the
run's description (:meth:`latentlab.simulation.Simulation.summary` plus ``record_every``, ``out`` and the
model's path).  Every walker is an independent trajectory.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from latentlab.io import atomic_output
from latentlab.validation import fail

SIM_FORMAT = "latentlab-simulation"
SIM_FORMAT_VERSION = 1


def dataset_name(record) -> str | None:
    """Name of the training data in a SIM file's or a model's ``dataset`` entry: the record written since
    0.2 (``{"name", "source", "n_frames", "temperature"}``) or the plain name of older files; None if absent."""
    if isinstance(record, dict):
        record = record.get("name") or record.get("source")
    return None if record is None else str(record)


def _json_default(obj):
    if isinstance(obj, (torch.Tensor, np.ndarray)):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return str(obj)


def save_simulation(path: str, Q, time, metadata: dict, **arrays) -> str:
    """Write a SIM file atomically: ``Q (n_records, n_walkers, n_cg)``, ``time (n_records,)`` ps, metadata, extras."""
    meta = dict(metadata)
    meta.setdefault("format", SIM_FORMAT)
    meta.setdefault("format_version", SIM_FORMAT_VERSION)
    payload = {"Q": np.asarray(Q, dtype=np.float32), "time": np.asarray(time, dtype=np.float64),
               "metadata": np.array(json.dumps(meta, default=_json_default))}
    payload.update({k: np.asarray(v) for k, v in arrays.items()})
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
    return os.fspath(path)


def load_simulation(path: str) -> dict:
    """Read a SIM file: dict with ``Q (n_records, n_walkers, n_cg)``, ``time``, ``metadata`` and extra arrays."""
    from latentlab.model import check_input_file

    path = check_input_file(path, "simulation", ("latentlab-simulation", "npz", "zip", "unknown"),
                            "a latentlab simulation (SIM) file", "latentlab simulate")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        meta = json.loads(str(out.pop("metadata")))
    except Exception as err:
        fail("simulation", f"{path} is not a readable latentlab simulation file ({type(err).__name__})",
             "pass a file written by 'latentlab simulate'")
    if not isinstance(meta, dict) or meta.get("format") != SIM_FORMAT:
        fail("simulation", f"{path} is not a latentlab simulation file (format {meta.get('format')!r})",
             "pass a file written by 'latentlab simulate'")
    out["metadata"] = meta
    return out
