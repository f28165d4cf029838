"""Training a structured flow on the potential alone: reverse KL under a tempering schedule.

Loss (one optimiser step, ``n = batch`` samples ``y_i ~ q``)::

    L(lambda) = mean_i [ log q(y_i) - log J(y_i) + lambda cap(U(y_i)) / kT ]

which is ``KL(q || p_lambda) - log Z_lambda`` for the tempered target
``p_lambda(y) ~ exp(-lambda U / kT) J(y)`` (``J`` the rigid-frame factor of
molecules, 1 for analytic systems; ``cap`` the lin-log cap of
:func:`latentlab.energies.linlog_cap`).  ``lambda = beta / beta_T`` rises
from ``beta0`` to 1 stage by stage; each stage trains ``steps`` steps with the
same Adam state (``initial_steps`` in the first); training stops after two
stages at ``lambda = 1``.

Schedules (``tempering``)
-------------------------
``adaptive``
    The scheme of arXiv 2002.10148 as used by Stupp & Koutsourelakis: from
    ``n_weights`` samples at the current lambda, with normalised weights
    ``wbar_i ~ exp(-lambda u_i + log J_i - log q_i)`` (``u = U/kT``), take the
    largest ``d <= delta_beta`` (shrinking by 0.6) with relative KL increase
    ``[log sum_i wbar_i exp(-d u_i) + d <u>_q] / KL_lambda <= delta_kl``, where
    ``KL_lambda = log Z_lambda + <lambda u - log J + log q>_q`` and ``log Z`` is
    carried from stage to stage (``log Z_{lambda + d} = log Z_lambda + log sum wbar exp(-d u)``,
    started from ``log mean w``).  When the carried estimate gives ``KL <= 0``
    (Monte-Carlo noise), the direct estimate ``log mean w - mean log w >= 0`` is used.
``linear``
    ``lambda += delta_beta`` per stage.
``none``
    ``lambda = 1`` throughout.

Checkpoints and resume
----------------------
After every stage, and when stopped (a callback returning True, or Ctrl-C),
the complete state — parameters, Adam state, schedule, step counters, the
torch RNG state, history — is written atomically to ``checkpoint``; a
trainer created with ``resume=True`` continues from it and produces the
same parameters, bit for bit, as an uninterrupted run on the same device.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass

import torch

from latentlab.energies import linlog_cap
from latentlab.validation import check_positive, fail

CHECKPOINT_FORMAT = "latentlab-flow-checkpoint"
TEMPERINGS = ("adaptive", "linear", "none")


@dataclass
class TrainSettings:
    """Hyper-parameters of :class:`FlowTrainer` (units: lambda = beta / beta_T, energies in kT).

    Attributes
    ----------
    batch : int
        Samples per optimiser step.
    initial_steps : int
        Steps of the first stage.
    steps : int
        Steps of every later stage.
    lr : float
        Adam learning rate.
    clip : float
        Gradient-norm clip (0: none).
    tempering : {"adaptive", "linear", "none"}
    beta0 : float
        Initial lambda (ignored by "none").
    delta_beta : float
        Largest (adaptive) or fixed (linear) lambda step.
    delta_kl : float
        Largest relative KL increase of an adaptive step.
    n_weights : int
        Samples for the tempering weights and the ESS of each stage.
    cap : float, kJ/mol
        Threshold of the lin-log energy cap in the loss.
    max_stages : int
        Safety limit on the number of stages.
    seed : int
    """

    batch: int = 500
    initial_steps: int = 5000
    steps: int = 100
    lr: float = 1e-3
    clip: float = 10.0
    tempering: str = "adaptive"
    beta0: float = 0.01
    delta_beta: float = 0.05
    delta_kl: float = 0.1
    n_weights: int = 1000
    cap: float = 1.0e4
    max_stages: int = 1000
    seed: int = 0

    def validated(self) -> "TrainSettings":
        for name in ("batch", "n_weights", "max_stages"):
            if int(getattr(self, name)) < 1:
                fail(name, f"got {getattr(self, name)}", "pass a positive integer")
        for name in ("initial_steps", "steps"):
            if int(getattr(self, name)) < 1:
                fail(name, f"got {getattr(self, name)}", "pass at least 1 step per stage")
        check_positive(self.lr, "lr")
        check_positive(self.cap, "cap", "kJ/mol")
        if self.tempering not in TEMPERINGS:
            fail("tempering", f"got {self.tempering!r}", f"use one of {', '.join(TEMPERINGS)}")
        if self.tempering != "none" and not 0 < self.beta0 <= 1:
            fail("beta0", f"got {self.beta0}", "pass 0 < beta0 <= 1 (a fraction of 1/kT)")
        if self.tempering != "none":
            check_positive(self.delta_beta, "delta_beta")
        if self.tempering == "adaptive":
            check_positive(self.delta_kl, "delta_kl")
        if self.clip < 0:
            fail("clip", f"got {self.clip}", "pass 0 (no clipping) or a positive gradient norm")
        return self


@dataclass
class TrainState:
    """Where training stands (saved in every checkpoint)."""

    stage: int = 0
    step_in_stage: int = 0
    total_steps: int = 0
    lam: float = 0.0
    log_z: float | None = None
    converged: int = 0
    ess_fraction: float = float("nan")
    last_loss: float = float("nan")
    skipped_steps: int = 0
    seconds: float = 0.0
    finished: bool = False


def kish_ess(log_w: torch.Tensor) -> float:
    """Kish effective sample size ``(sum w)^2 / sum w^2`` of log-weights ``(n,)`` (any normalisation)."""
    lw = log_w[torch.isfinite(log_w)]
    if lw.numel() == 0:
        return 0.0
    return float(torch.exp(2 * torch.logsumexp(lw, 0) - torch.logsumexp(2 * lw, 0)))


class FlowTrainer:
    """Reverse-KL training of a :class:`~latentlab.flows.StructuredFlow` on a :class:`~latentlab.flows.FlowSystem`.

    Parameters
    ----------
    flow : StructuredFlow
    system : FlowSystem
    settings : TrainSettings
    checkpoint : str, optional
        Path of the checkpoint file (written after every stage and on stop).
    resume : bool
        Continue from ``checkpoint``.
    device, dtype : torch device and floating dtype of training.
    progress : bool
        Show a tqdm bar (steps; beta, ESS, loss).
    callback : callable, optional
        ``callback(info: dict) -> bool`` after every step (``info``: step, stage, beta, loss, ess_fraction,
        seconds); returning True stops training within that step (a checkpoint is written).

    Notes
    -----
    Training uses the global torch RNG (seeded with ``settings.seed``; restored on resume).
    """

    def __init__(self, flow, system, settings: TrainSettings | None = None, checkpoint: str | None = None,
                 resume: bool = False, device=None, dtype=torch.float32, progress: bool = False, callback=None):
        self.settings = (settings or TrainSettings()).validated()
        self.system = system
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.flow = flow.to(device=self.device, dtype=dtype)
        self.system.energy.to(device=self.device)
        self.checkpoint = checkpoint
        self.progress = progress
        self.callback = callback
        self.optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.settings.lr)
        self.state = TrainState(lam=1.0 if self.settings.tempering == "none" else float(self.settings.beta0))
        self.history: list[dict] = []
        self._stop = threading.Event()
        if resume:
            self._load_checkpoint()
        else:
            torch.manual_seed(int(self.settings.seed))

    # ------------------------------------------------------------------ objective
    def _objective(self, n: int, lam: float):
        """Samples, per-sample terms and the loss at ``lam``: (loss, u, log_w) with u = capped U/kT."""
        y, log_q = self.flow.sample(n)
        energy = self.system.energy(self.system.positions(y))
        u = linlog_cap(energy, self.settings.cap) / self.system.kT
        lj = self.system.log_jacobian(y)
        loss = (log_q - lj + lam * u).mean()
        return loss, u, lj - log_q

    def request_stop(self) -> None:
        """Ask the running :meth:`fit` to stop after the current step (thread-safe)."""
        self._stop.set()

    def _step(self) -> float:
        s = self.settings
        self.optimizer.zero_grad(set_to_none=True)
        loss, _, _ = self._objective(s.batch, self.state.lam)
        if not torch.isfinite(loss):
            self.state.skipped_steps += 1
            return float("nan")
        loss.backward()
        grads = [p.grad for p in self.flow.parameters() if p.grad is not None]
        if any(not torch.isfinite(g).all() for g in grads):
            self.state.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())
        if s.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), s.clip)
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def _evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, log J - log q)`` of ``n_weights`` fresh samples (u capped, in kT)."""
        _, u, rest = self._objective(self.settings.n_weights, self.state.lam)
        return u.double(), rest.double()

    def _next_lambda(self, u: torch.Tensor, rest: torch.Tensor) -> None:
        s, st = self.settings, self.state
        if st.lam >= 1.0:
            return
        if s.tempering == "linear":
            st.lam = min(1.0, st.lam + s.delta_beta)
            return
        ok = torch.isfinite(u) & torch.isfinite(rest)
        u, rest = u[ok], rest[ok]
        lam = st.lam
        log_w = -lam * u + rest
        n = log_w.numel()
        if st.log_z is None:
            st.log_z = float(torch.logsumexp(log_w, 0) - math.log(n))
        log_nw = log_w - torch.logsumexp(log_w, 0)
        mean_u = float(u.mean())
        kl = st.log_z - float(log_w.mean())
        if not (math.isfinite(kl) and kl > 0):
            kl = float(torch.logsumexp(log_w, 0) - math.log(n) - log_w.mean())
        kl = max(kl, 1e-12)
        d = min(s.delta_beta, 1.0 - lam)
        while True:
            d_log_z = float(torch.logsumexp(log_nw - d * u, 0))
            increase = (d_log_z + d * mean_u) / kl
            if increase <= s.delta_kl or d < 1e-10:
                break
            d *= 0.6
        st.lam = min(1.0, lam + d)
        st.log_z += float(torch.logsumexp(log_nw - (st.lam - lam) * u, 0))

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"format": CHECKPOINT_FORMAT, "version": 1, "flow_config": self.flow.config(),
                "system": self.system.config(), "settings": asdict(self.settings), "dtype": str(self.dtype),
                "model_state": {k: v.detach().cpu() for k, v in self.flow.state_dict().items()},
                "optimizer_state": self.optimizer.state_dict(), "state": asdict(self.state), "rng": rng,
                "history": list(self.history)}

    def save_checkpoint(self) -> None:
        """Write the complete training state to ``checkpoint`` (atomically)."""
        if not self.checkpoint:
            return
        from latentlab.io import atomic_output

        with atomic_output(self.checkpoint, suffix=".pt") as tmp:
            torch.save(self._payload(), tmp)

    def _load_checkpoint(self) -> None:
        path = self.checkpoint
        if not path or not os.path.exists(path):
            fail("resume", f"no checkpoint at {path}", "train without --resume first")
        data = torch.load(path, map_location="cpu", weights_only=True)
        if data.get("format") != CHECKPOINT_FORMAT:
            fail("resume", f"{path} is not a flow checkpoint", "pass the .ckpt file written by flow training")
        if data["flow_config"] != self.flow.config():
            fail("resume", "the checkpoint's architecture differs from the requested one",
                 "resume with the same --slow-dims and architecture options")
        if data["system"] != self.system.config():
            fail("resume", f"the checkpoint was trained on {data['system']}", "resume with the same system and temperature")
        saved = dict(data["settings"])
        now = asdict(self.settings)
        differ = [k for k in saved if saved[k] != now.get(k) and k not in ("max_stages",)]
        if differ:
            fail("resume", f"settings differ from the checkpoint's: {', '.join(differ)}",
                 "resume with the same training options (or start a new run)")
        self.flow.load_state_dict(data["model_state"])
        self.flow.to(device=self.device, dtype=self.dtype)
        self.optimizer.load_state_dict(data["optimizer_state"])
        self.state = TrainState(**data["state"])
        self.history = list(data["history"])
        torch.set_rng_state(data["rng"]["cpu"])
        if "cuda" in data["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(data["rng"]["cuda"], self.device)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> TrainState:
        """Train until two stages after lambda = 1 (or a stop request); returns the final :class:`TrainState`."""
        s, st = self.settings, self.state
        if st.finished:
            return st
        self._stop.clear()
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            def on_sigint(signum, frame):
                if self._stop.is_set():  # second Ctrl-C: give up at once
                    raise KeyboardInterrupt
                self._stop.set()

            old_handler = signal.signal(signal.SIGINT, on_sigint)
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(initial=st.total_steps, unit="step", desc="flow", dynamic_ncols=True)
        t_start = time.perf_counter() - st.seconds
        try:
            while True:
                n_steps = s.initial_steps if st.stage == 0 else s.steps
                while st.step_in_stage < n_steps:
                    if self._stop.is_set():
                        st.seconds = time.perf_counter() - t_start
                        self.save_checkpoint()
                        return st
                    loss = self._step()
                    st.step_in_stage += 1
                    st.total_steps += 1
                    st.last_loss = loss
                    st.seconds = time.perf_counter() - t_start
                    if bar is not None:
                        bar.update(1)
                        if st.total_steps % 10 == 0:
                            bar.set_postfix(beta=f"{st.lam:.4f}", ess=f"{st.ess_fraction:.3f}", loss=f"{loss:.4g}")
                    if self.callback is not None and self.callback(self.info()):
                        self._stop.set()
                u, rest = self._evaluate()
                st.ess_fraction = kish_ess(-st.lam * u + rest) / max(1, int(torch.isfinite(u).sum()))
                self.history.append({"stage": st.stage, "beta": st.lam, "steps": st.total_steps, "loss": st.last_loss,
                                     "ess_fraction": st.ess_fraction, "seconds": time.perf_counter() - t_start})
                if st.lam >= 1.0:
                    st.converged += 1
                if st.converged >= 2 or st.stage + 1 >= s.max_stages:
                    st.finished = True
                    st.seconds = time.perf_counter() - t_start
                    self.save_checkpoint()
                    return st
                self._next_lambda(u, rest)
                st.stage += 1
                st.step_in_stage = 0
                st.seconds = time.perf_counter() - t_start
                if bar is not None:
                    bar.set_postfix(beta=f"{st.lam:.4f}", ess=f"{st.ess_fraction:.3f}", loss=f"{st.last_loss:.4g}")
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)

    def info(self) -> dict:
        """Progress of the run (for callbacks and dashboards)."""
        st = self.state
        return {"step": st.total_steps, "stage": st.stage, "beta": st.lam, "loss": st.last_loss,
                "ess_fraction": st.ess_fraction, "seconds": st.seconds, "finished": st.finished}
