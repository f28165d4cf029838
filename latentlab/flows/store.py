"""Flow files: a trained structured flow with its system and training record, as plain data.

A flow file is ``torch.save`` of a dict of plain Python values and tensors
(no pickled classes), read back with ``torch.load(..., weights_only=True)``::

    format        "latentlab-flow"
    version       1
    flow_config   StructuredFlow.config()   (architecture; rebuilds the modules)
    system        FlowSystem.config()       (name and temperature; rebuilds the energy)
    model_state   state_dict, CPU tensors
    dtype         "torch.float32" / "torch.float64" (the training dtype)
    settings      TrainSettings as a dict
    history       one dict per tempering stage (beta, steps, loss, ESS, seconds)
    train         steps, stages, train_seconds, finished, ess_fraction, skipped_steps
    versions      latentlab, torch, zuko
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import torch

from latentlab.validation import fail

FLOW_FORMAT = "latentlab-flow"


@dataclass
class TrainedFlow:
    """A flow loaded from (or about to be written to) a flow file.

    Attributes
    ----------
    flow : StructuredFlow
    system : FlowSystem
    settings : dict
        The training settings.
    history : list of dict
    train : dict
        ``steps``, ``stages``, ``train_seconds``, ``finished``, ``ess_fraction``, ``skipped_steps``.
    dtype : torch.dtype
    path : str
    """

    flow: object
    system: object
    settings: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    train: dict = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    path: str = ""

    @property
    def n_slow(self) -> int:
        return self.flow.n_slow

    @property
    def bound(self) -> float:
        return self.flow.bound

    def sample(self, n: int, forces: bool = False, seed: int | None = None, batch: int = 10000, device=None):
        """:func:`latentlab.flows.draw_samples` of this flow."""
        from latentlab.flows.samples import draw_samples

        return draw_samples(self.flow, self.system, n, batch=batch, forces=forces, seed=seed, device=device)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("latentlab", "torch", "zuko"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def save_flow(path: str, trained: TrainedFlow) -> str:
    """Write a flow file atomically; returns ``path``."""
    from latentlab.io import atomic_output

    data = {"format": FLOW_FORMAT, "version": 1, "flow_config": trained.flow.config(),
            "system": trained.system.config(), "dtype": str(trained.dtype).replace("torch.", ""),
            "model_state": {k: v.detach().cpu() for k, v in trained.flow.state_dict().items()},
            "settings": dict(trained.settings), "history": list(trained.history), "train": dict(trained.train),
            "versions": _versions()}
    with atomic_output(path, suffix=".pt") as tmp:
        torch.save(data, tmp)
    return path


def load_flow(path: str, device=None, system=None) -> TrainedFlow:
    """Read a flow file written by :func:`save_flow` (``weights_only=True``: no code is unpickled).

    Parameters
    ----------
    path : str
    device : torch device, optional
    system : FlowSystem, optional
        Reuse an already built system (must match the file's); default: rebuild it from the file.
    """
    from latentlab.flows.model import StructuredFlow
    from latentlab.flows.systems import system_from_config

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"flow: {path} does not exist. Fix: check the path, or train one with `latentlab flow train`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for foreign files
        fail("flow", f"{path} could not be read as a flow file ({type(err).__name__})",
             "pass a file written by `latentlab flow train`")
    if not isinstance(data, dict) or data.get("format") != FLOW_FORMAT:
        what = data.get("format") if isinstance(data, dict) else type(data).__name__
        fix = "pass the finished flow, not its .ckpt (resume with --resume)" if what == "latentlab-flow-checkpoint" \
            else "pass a file written by `latentlab flow train`"
        fail("flow", f"{path} is not a flow file (found {what!r})", fix)
    if int(data.get("version", 0)) > 1:
        fail("flow", f"{path} has format version {data['version']}, newer than this latentlab reads",
             "upgrade latentlab")
    dtype = getattr(torch, data.get("dtype", "float32"))
    flow = StructuredFlow.from_config(data["flow_config"])
    flow.load_state_dict(data["model_state"])
    flow = flow.to(dtype=dtype)
    if device is not None:
        flow = flow.to(device)
    flow.eval()
    if system is None:
        system = system_from_config(data["system"])
    elif system.config() != data["system"]:
        fail("system", f"is {system.config()}, the flow was trained on {data['system']}", "pass the matching system")
    return TrainedFlow(flow, system, data.get("settings", {}), data.get("history", []), data.get("train", {}), dtype, path)


def trained_from_trainer(trainer) -> TrainedFlow:
    """The :class:`TrainedFlow` of a finished (or stopped) :class:`~latentlab.flows.FlowTrainer`."""
    st = trainer.state
    train = {"steps": st.total_steps, "stages": len(trainer.history), "train_seconds": st.seconds,
             "finished": st.finished, "ess_fraction": st.ess_fraction, "skipped_steps": st.skipped_steps,
             "batch": trainer.settings.batch}
    return TrainedFlow(trainer.flow, trainer.system, asdict(trainer.settings), list(trainer.history), train,
                       trainer.dtype)
