"""``latentlab info FILE [--json]``: what a data set, model or SIM file holds.

The kind of file is read from its content (:func:`latentlab.data.sniff.file_kind`),
so a file with a missing or wrong extension is still described.
"""

from __future__ import annotations

import os

from latentlab.cli._data_args import add_data_arguments, load_data

#: Model / SIM metadata keys shown by ``info`` (when present).
MODEL_KEYS = ("map", "names", "units", "periodic", "temperature", "convention", "method", "potential", "energy_unit",
              "best_val_loss")
SIM_KEYS = ("model", "map", "names", "units", "temperature", "model_temperature", "dt", "gamma", "walkers",
            "steps_requested", "steps_done", "record_every", "simulated_ps", "metropolis", "device", "seed",
            "interrupted", "seconds")


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="summarise a data set, model or SIM file (built-in name or file)",
                              description="""
        Summarise a data set (frames, atoms, temperature, forces, energies, topology, dropped frames,
        provenance), a model file (map, temperature, training) or a SIM file (walkers, steps, time step,
        re-seeded walkers, kinetic temperature).""")
    add_data_arguments(p, help="built-in data set name (see `latentlab datasets`), or a data set, model or SIM file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _plain(value):
    """JSON-friendly copy: tensors and arrays become lists, short strings stay."""
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 16 else f"array{tuple(value.shape)}"
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value] if len(value) <= 16 else f"list of {len(value)}"
    return value


def model_info(path: str) -> dict:
    """Summary of a latentlab model (or checkpoint) file: format, configuration, metadata, parameter count."""
    import torch

    from latentlab.validation import fail

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged archives
        fail("file", f"{path} is a latentlab model file that could not be read ({type(err).__name__}: "
             f"{str(err).strip().splitlines()[0] if str(err).strip() else ''})",
             "regenerate it with latentlab train, or restore a good copy")
    if not isinstance(obj, dict):
        fail("file", f"{path} holds a {type(obj).__name__}, not a latentlab model", "pass a file written by latentlab train")
    out = {"kind": str(obj.get("format", "model")), "path": os.path.abspath(path), "file_bytes": os.path.getsize(path)}
    if "format_version" in obj:
        out["format_version"] = _plain(obj["format_version"])
    state = obj.get("state_dict")
    if isinstance(state, dict):
        out["parameters"] = int(sum(v.numel() for v in state.values() if hasattr(v, "numel")))
    if isinstance(obj.get("config"), dict):
        out["config"] = _plain(obj["config"])
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    for key in MODEL_KEYS:
        if key in meta:
            out[key] = _plain(meta[key])
    if isinstance(meta.get("dataset"), dict):
        out["dataset"] = {k: _plain(v) for k, v in meta["dataset"].items() if not isinstance(v, (dict, list))}
    if isinstance(meta.get("training"), dict):
        out["training"] = {k: _plain(v) for k, v in meta["training"].items() if not isinstance(v, (dict, list))}
    for key in ("epoch", "iteration"):  # checkpoints
        if key in obj:
            out[key] = _plain(obj[key])
    return out


def simulation_info(path: str) -> dict:
    """Summary of a SIM file: records, walkers, coordinates, time span, settings and diagnostics."""
    import json

    import numpy as np

    from latentlab.validation import fail

    try:
        with np.load(path, allow_pickle=False) as z:
            shape = z["Q"].shape
            time = z["time"]
            meta = json.loads(str(z["metadata"]))
            extra = [k for k in z.files if k not in ("Q", "time", "metadata")]
    except Exception as err:  # damaged archive or member
        fail("file", f"{path} is a latentlab SIM file that could not be read ({type(err).__name__}: {err})",
             "run latentlab simulate again, or restore a good copy")
    out = {"kind": str(meta.get("format", "latentlab-simulation")), "path": os.path.abspath(path),
           "file_bytes": os.path.getsize(path), "format_version": meta.get("format_version"),
           "records": int(shape[0]) if len(shape) > 0 else 0, "walkers": int(shape[1]) if len(shape) > 1 else 0,
           "n_cg": int(shape[2]) if len(shape) > 2 else 0}
    if len(time):
        out["time_ps"] = [float(time[0]), float(time[-1])]
    for key in SIM_KEYS:
        if key in meta and key not in out:
            out[key] = _plain(meta[key])
    if isinstance(meta.get("diagnostics"), dict):
        out["diagnostics"] = _plain(meta["diagnostics"])
    if extra:
        out["arrays"] = extra
    return out


def describe(args) -> dict:
    """The summary ``info`` prints for ``args.data``."""
    from latentlab.data import resolve
    from latentlab.data.sniff import file_kind

    name = resolve(args.data)
    kind = file_kind(name) if os.path.exists(name) else "builtin"
    if kind == "latentlab-model":
        from latentlab.model import CGModel

        model = CGModel.load(name)
        described = _plain(model.describe())
        return {**described, "kind": "latentlab-model", "training": described.pop("kind"), "path": os.path.abspath(name),
                "file_bytes": os.path.getsize(name),
                "parameters": int(sum(p.numel() for p in model.potential.parameters()))}
    if kind == "latentlab-checkpoint":
        return model_info(name)
    if kind == "latentlab-simulation":
        return simulation_info(name)
    return load_data(args).info()


def run(args) -> int:
    import json

    info = describe(args)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return 0
