"""Data-free coarse-graining with structured-latent normalizing flows.

After Stupp & Koutsourelakis, "Energy-based coarse-graining in molecular
dynamics: a flow-based framework without data" (JCTC 2025, arXiv 2504.20940);
docs/theory.md section 5; docs/flows.md for the measured results.

A flow learns the Boltzmann density of a system from its potential alone
(reverse KL, tempered).  Its latent splits into a few *slow* dimensions with a
multimodal marginal and many *fast* ones with a conditional Gaussian; once
trained it draws independent weighted samples at full resolution, and its
slow latent is a CG map.

Typical use::

    from latentlab.flows import FlowTrainer, get_system, make_flow, train_settings, trained_from_trainer
    system = get_system("double-well")
    flow = make_flow(system)
    trainer = FlowTrainer(flow, system, train_settings(system, seed=0))
    trainer.fit()
    trained = trained_from_trainer(trainer)
    samples = trained.sample(100_000)          # FlowSamples: log q, U, log w, ESS
    samples.populations(system)                 # {state: (value, stderr)}
    cg_map = flow_slow_map(trained)             # Q = z(x), a latentlab CGMap
    x = FlowReconstructor(trained).reconstruct(Q)

Modules: :mod:`~latentlab.flows.model` (the flow), :mod:`~latentlab.flows.transforms`
and :mod:`~latentlab.flows.geometry` (bijections, rigid frame, Z-matrix),
:mod:`~latentlab.flows.systems` (targets), :mod:`~latentlab.flows.train`
(reverse KL + tempering), :mod:`~latentlab.flows.samples` (weights, ESS,
estimates), :mod:`~latentlab.flows.store` (flow files), :mod:`~latentlab.flows.report`,
:mod:`~latentlab.flows.reconstruct`.
"""

from latentlab.flows.model import InternalDecoder, LinearDecoder, PseudoAtomDecoder, StructuredFlow
from latentlab.flows.reconstruct import FlowReconstructor, FlowSlowMap, flow_slow_map
from latentlab.flows.report import flow_report
from latentlab.flows.samples import FlowSamples, draw_samples
from latentlab.flows.store import TrainedFlow, load_flow, save_flow, trained_from_trainer
from latentlab.flows.systems import SYSTEMS, FlowSystem, get_system
from latentlab.flows.train import FlowTrainer, TrainSettings, kish_ess

ARCHITECTURE_KEYS = ("bound", "layers", "hidden", "bins", "cond_hidden", "fast_covariance")


def make_flow(system, slow_dims: int | None = None, decoder: str | None = None, alpha: float | None = None,
              **architecture) -> StructuredFlow:
    """A new (untrained) :class:`StructuredFlow` for ``system`` with its default architecture.

    Parameters
    ----------
    system : FlowSystem
    slow_dims : int, optional
        ``k`` (default: the system's).
    decoder : {"linear", "internal", "pseudo-atoms"}, optional
        Molecules: ``internal`` (default) or ``pseudo-atoms`` (the authors' Cartesian map).
    alpha : float, optional
        Initial diagonal logit of the decoder's softmax matrix.
    architecture : bound, layers, hidden, bins, cond_hidden, fast_covariance
    """
    d = system.defaults
    k = int(d["slow_dims"] if slow_dims is None else slow_dims)
    arch = {key: architecture.get(key, d[key]) for key in ARCHITECTURE_KEYS}
    unknown = set(architecture) - set(ARCHITECTURE_KEYS)
    if unknown:
        from latentlab.validation import fail

        fail("architecture", f"unknown options {sorted(unknown)}", f"use {', '.join(ARCHITECTURE_KEYS)}")
    dec = system.make_decoder(k, decoder=decoder, alpha=alpha)
    return StructuredFlow(dec, k, bound=arch["bound"], layers=arch["layers"], hidden=tuple(arch["hidden"]),
                          bins=arch["bins"], cond_hidden=tuple(arch["cond_hidden"]),
                          fast_covariance=arch["fast_covariance"])


def train_settings(system, **overrides) -> TrainSettings:
    """:class:`TrainSettings` from the system's defaults, with ``overrides`` (None values ignored)."""
    fields = TrainSettings.__dataclass_fields__
    base = {k: v for k, v in system.defaults.items() if k in fields}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainSettings(**base)


__all__ = ["FlowReconstructor", "FlowSamples", "FlowSlowMap", "FlowSystem", "FlowTrainer", "InternalDecoder",
           "LinearDecoder", "PseudoAtomDecoder", "SYSTEMS", "StructuredFlow", "TrainSettings", "TrainedFlow",
           "draw_samples", "flow_report", "flow_slow_map", "get_system", "kish_ess", "load_flow", "make_flow",
           "save_flow", "train_settings", "trained_from_trainer"]
