"""The structured normalizing flow: a slow latent with a multimodal marginal, a fast conditional Gaussian, a bijection.

Generative model (Stupp & Koutsourelakis, "Energy-based coarse-graining in
molecular dynamics: a flow-based framework without data", JCTC 2025,
arXiv 2504.20940; docs/theory.md section 5)::

    z0 ~ TruncatedNormal(0, 1) on [-B, B]^k          (fixed base)
    z  = T(z0)                                        (rational-quadratic spline couplings on [-B, B]^k;
                                                       element-wise splines for k = 1)
    X | z ~ N(mu(z), diag sigma(z)^2)                 (mu, log sigma from an MLP)
    y  = G([z; X])                                    (decoder: learnable softmax-row matrix A, then fixed maps)

    log q(y) = log q(z) + log q(X | z) - log|det dG/d[z; X]|

``y`` are the flow's coordinates: the system's flat coordinates for analytic
systems, the reduced rigid-frame coordinates (3 n_atoms - 6) for molecules.
The slow latent ``z`` lies in ``[-B, B]^k`` (zuko's splines map the box onto
itself), so as a CG coordinate it is bounded.

Decoders
--------
* :class:`LinearDecoder` — ``y = A [z; X]`` (analytic systems);
* :class:`PseudoAtomDecoder` — the authors' molecular map: pseudo-atoms as
  convex combinations of atoms, ``A = C kron I_3`` without the fixed rows,
  then ``exp`` on the two frame coordinates that are positive;
* :class:`InternalDecoder` — ``u = A [z; X]``, then bonds/angles/torsions by
  fixed element-wise bijections, then a Z-matrix to the reduced frame.  The
  slow dimensions start on chosen torsions (alanine dipeptide: phi, psi).

Built on zuko (Rozet et al., zuko: normalizing flows in PyTorch) splines:
``GeneralCouplingTransform`` with ``MonotonicRQSTransform`` (Durkan et al.,
"Neural spline flows", NeurIPS 2019).
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch.distributions import Independent, Normal

import zuko
from zuko.flows import ElementWiseTransform, Flow, GeneralCouplingTransform, UnconditionalDistribution
from zuko.transforms import MonotonicRQSTransform

from latentlab.flows.geometry import ZMatrix, ZMatrixTransform
from latentlab.flows.transforms import (ANGLE, BOND, TORSION, InternalCoordinateTransform, PositiveTransform,
                                        PseudoAtomLinear, SoftmaxLinear, compose)
from latentlab.validation import fail


def _truncated_normal(loc, scale, lower, upper):
    return Independent(zuko.distributions.Truncated(Normal(loc, scale), lower, upper), 1)


# ---------------------------------------------------------------------------- decoders


class LinearDecoder(torch.nn.Module):
    """``y = A [z; X]`` with softmax rows (``logits`` initial, shape ``(D, D)``)."""

    kind = "linear"

    def __init__(self, logits):
        super().__init__()
        self.linear = SoftmaxLinear(logits)

    @property
    def dim(self) -> int:
        return self.linear.logits.shape[0]

    @property
    def matrix(self) -> torch.Tensor:
        return self.linear.matrix

    def forward(self):
        return self.linear()

    def config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim}

    @classmethod
    def from_config(cls, cfg: dict) -> "LinearDecoder":
        return cls(torch.zeros(cfg["dim"], cfg["dim"]))


class PseudoAtomDecoder(torch.nn.Module):
    """Pseudo-atoms -> reduced frame coordinates: ``v = A p`` (per-atom softmax rows), then ``exp`` on ``v_0, v_1``.

    The latent ``[z; X]`` is read as pseudo-atom coordinates in the layout of the reduced
    coordinates (:class:`~latentlab.flows.transforms.PseudoAtomLinear`); ``exp`` keeps the two
    frame coordinates ``z_1, x_2`` positive (the canonical frame), so every configuration has
    exactly one pre-image.
    """

    kind = "pseudo-atoms"

    def __init__(self, frame, alpha: float = 3.0):
        super().__init__()
        self.frame_atoms = tuple(frame.atoms)
        self.n_atoms = frame.n_atoms
        self.linear = PseudoAtomLinear(frame, alpha=alpha)

    @property
    def dim(self) -> int:
        return 3 * self.n_atoms - 6

    @property
    def matrix(self) -> torch.Tensor:
        return self.linear.matrix

    def forward(self):
        return compose(self.linear(), PositiveTransform([0, 1]))

    def config(self) -> dict:
        return {"kind": self.kind, "n_atoms": self.n_atoms, "frame": list(self.frame_atoms)}

    @classmethod
    def from_config(cls, cfg: dict) -> "PseudoAtomDecoder":
        from latentlab.flows.geometry import RigidFrame

        return cls(RigidFrame(cfg["n_atoms"], cfg["frame"]))


class InternalDecoder(torch.nn.Module):
    """``u = A [z; X]`` -> internal coordinates (fixed element-wise maps) -> Z-matrix -> reduced frame coordinates.

    Parameters
    ----------
    zmatrix : ZMatrix
    center : array, shape=(D,)
        Bond lengths (nm), angles and torsions (rad) at ``u = 0`` (a reference structure); a torsion's
        circle is cut at ``center + pi``.
    slope : array, shape=(D,)
        See :class:`~latentlab.flows.transforms.InternalCoordinateTransform`.
    latent_order : array, shape=(D,), int
        IC index that latent dimension ``j`` starts on (the slow dimensions first).
    alpha : float
        Initial logits ``alpha`` on ``(ic, latent)`` pairs of ``latent_order``, 0 elsewhere.
    fold : array, shape=(D,), int, optional
        Torsion symmetry numbers (default 1; 3 for methyl groups: the torsion stays in one 120-degree well).
    """

    kind = "internal"

    def __init__(self, zmatrix: ZMatrix, center, slope, latent_order, alpha: float = 10.0, fold=None):
        super().__init__()
        self.zmatrix = zmatrix
        d = zmatrix.dim
        order = np.asarray(latent_order, dtype=np.int64)
        if sorted(order.tolist()) != list(range(d)):
            fail("latent_order", "is not a permutation of the internal coordinates", f"pass each of 0..{d - 1} once")
        logits = torch.zeros(d, d, dtype=torch.float64)
        logits[torch.as_tensor(order), torch.arange(d)] = float(alpha)
        self.linear = SoftmaxLinear(logits.to(torch.get_default_dtype()))
        self.register_buffer("ic_kind", torch.as_tensor(zmatrix.kinds()))
        self.register_buffer("ic_center", torch.as_tensor(np.asarray(center, dtype=np.float64)).to(torch.get_default_dtype()))
        self.register_buffer("ic_slope", torch.as_tensor(np.asarray(slope, dtype=np.float64)).to(torch.get_default_dtype()))
        self.register_buffer("latent_order", torch.as_tensor(order))
        fold = np.ones(d, dtype=np.int64) if fold is None else np.asarray(fold, dtype=np.int64)
        self.register_buffer("ic_fold", torch.as_tensor(fold))
        self._zt = ZMatrixTransform(zmatrix)

    @property
    def dim(self) -> int:
        return self.zmatrix.dim

    @property
    def matrix(self) -> torch.Tensor:
        return self.linear.matrix

    def internal(self):
        return InternalCoordinateTransform(self.ic_kind, self.ic_center, self.ic_slope, self.ic_fold)

    def forward(self):
        return compose(self.linear(), self.internal(), self._zt)

    def config(self) -> dict:
        return {"kind": self.kind, "zmatrix": self.zmatrix.to_dict()}

    @classmethod
    def from_config(cls, cfg: dict) -> "InternalDecoder":
        zm = ZMatrix.from_dict(cfg["zmatrix"])
        d = zm.dim
        return cls(zm, np.ones(d), np.ones(d), np.arange(d))

    @staticmethod
    def default_slopes(zmatrix: ZMatrix, center) -> np.ndarray:
        """Slopes that make one latent unit ~ a thermal fluctuation at 300 K.

        Bonds 2 % of their length, angles ~0.1 rad, offset torsions 0.2 rad, proper torsions 2 rad per
        latent unit (a methyl torsion: 0.8 rad per unit, a standard normal latent fills its 120-degree window).
        """
        kinds = zmatrix.kinds()
        center = np.asarray(center, dtype=np.float64)
        slope = np.empty(len(kinds))
        slope[kinds == BOND] = 0.02
        th = center[kinds == ANGLE]
        slope[kinds == ANGLE] = 0.1 / np.clip(th * (1 - th / math.pi), 0.05, None)
        tors = np.where(kinds == TORSION)[0]
        slope[tors] = np.where(zmatrix.proper, 1.0, 0.1)  # torsions come in Z-matrix row order
        return slope


DECODERS = {c.kind: c for c in (LinearDecoder, PseudoAtomDecoder, InternalDecoder)}


# ---------------------------------------------------------------------------- the flow


class StructuredFlow(torch.nn.Module):
    """Slow spline flow + fast conditional Gaussian + decoder (see the module docstring).

    Parameters
    ----------
    decoder : LinearDecoder, PseudoAtomDecoder or InternalDecoder
        Fixes the dimension ``D`` of the coordinates.
    n_slow : int
        ``k``, 1 <= k <= D.
    bound : float
        ``B``: the slow latent lives in ``[-B, B]^k``.
    layers : int
        Number of spline (coupling) layers of the slow flow.
    hidden : tuple of int
        Hidden widths of the coupling conditioners.
    bins : int
        Spline bins.
    cond_hidden : tuple of int
        Hidden widths of the MLP giving ``mu(z), log sigma(z)``.
    fast_covariance : {"diagonal", "full"}
        ``diagonal``: ``X = mu(z) + sigma(z) * eps`` (the authors' model).  ``full``:
        ``X = mu(z) + L (sigma(z) * eps)`` with a learned unit lower-triangular ``L`` (``det L = 1``),
        so the fast variables are correlated (covariance ``L diag(sigma^2) L^T``); still a Gaussian given ``z``.
    """

    def __init__(self, decoder, n_slow: int, bound: float = 5.0, layers: int = 6, hidden=(32, 32), bins: int = 8,
                 cond_hidden=(32, 32), fast_covariance: str = "diagonal"):
        super().__init__()
        dim = decoder.dim
        if not 1 <= int(n_slow) <= dim:
            fail("n_slow", f"got {n_slow} for {dim} coordinates", f"pass 1 <= slow dims <= {dim}")
        if not bound > 0:
            fail("bound", f"got {bound}", "pass a positive box half-width")
        self.dim, self.n_slow, self.bound = int(dim), int(n_slow), float(bound)
        self.layers, self.hidden, self.bins, self.cond_hidden = int(layers), tuple(hidden), int(bins), tuple(cond_hidden)
        k = self.n_slow
        spline = partial(MonotonicRQSTransform, bound=self.bound)
        shapes = [(self.bins,), (self.bins,), (self.bins - 1,)]
        transforms = []
        for i in range(self.layers):
            if k == 1:
                transforms.append(ElementWiseTransform(1, 0, univariate=spline, shapes=shapes))
            else:
                masks = [torch.arange(k) % 2 == 0, torch.arange(k) % 2 == 1, torch.arange(k) < k // 2,
                         torch.arange(k) >= k // 2]
                transforms.append(GeneralCouplingTransform(k, 0, mask=masks[i % 4], univariate=spline, shapes=shapes,
                                                           hidden_features=self.hidden))
        base = UnconditionalDistribution(_truncated_normal, torch.zeros(k), torch.ones(k),
                                         torch.full((k,), -self.bound), torch.full((k,), self.bound), buffer=True)
        # zuko's convention is value -> base; here the spline layers run base -> value (the direction of
        # sampling, which training needs at every step), so sampling costs one pass and the log-Jacobian
        # comes with it; densities of given values use the inverse.
        self.slow = Flow(transforms, base)
        self.n_fast = self.dim - k
        if fast_covariance not in ("diagonal", "full"):
            fail("fast_covariance", f"got {fast_covariance!r}", "use 'diagonal' or 'full'")
        self.fast_covariance = fast_covariance
        if fast_covariance == "full" and self.n_fast > 1:
            self.fast_tril = torch.nn.Parameter(torch.zeros(self.n_fast, self.n_fast))
        else:
            self.fast_tril = None
        if self.n_fast:
            self.fast = zuko.nn.MLP(k, 2 * self.n_fast, hidden_features=self.cond_hidden)
            with torch.no_grad():  # start at N(0, 1) for every z
                self.fast[-1].weight.mul_(1e-2)
                self.fast[-1].bias.zero_()
        else:
            self.fast = None
        self.decoder = decoder

    # ------------------------------------------------------------------ config
    def config(self) -> dict:
        """Plain data that rebuilds the architecture (with :meth:`from_config`)."""
        return {"n_slow": self.n_slow, "bound": self.bound, "layers": self.layers, "hidden": list(self.hidden),
                "bins": self.bins, "cond_hidden": list(self.cond_hidden), "fast_covariance": self.fast_covariance,
                "decoder": self.decoder.config()}

    @classmethod
    def from_config(cls, cfg: dict) -> "StructuredFlow":
        dec_cfg = cfg["decoder"]
        if dec_cfg.get("kind") not in DECODERS:
            fail("flow", f"unknown decoder {dec_cfg.get('kind')!r}", f"use one of {', '.join(DECODERS)}")
        decoder = DECODERS[dec_cfg["kind"]].from_config(dec_cfg)
        return cls(decoder, cfg["n_slow"], cfg["bound"], cfg["layers"], tuple(cfg["hidden"]), cfg["bins"],
                   tuple(cfg["cond_hidden"]), cfg.get("fast_covariance", "diagonal"))

    # ------------------------------------------------------------------ pieces
    def _unit_tril(self) -> torch.Tensor:
        return torch.tril(self.fast_tril, diagonal=-1) + torch.eye(self.n_fast, dtype=self.fast_tril.dtype,
                                                                   device=self.fast_tril.device)

    def _fast_sample(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(X, log q(X | z))``; with a full covariance ``X = mu + L (sigma eps)`` and ``log det L = 0``."""
        h = self.fast(z)
        mu, log_sigma = h[..., :self.n_fast], h[..., self.n_fast:]
        eps = torch.randn_like(mu)
        log_q = Normal(torch.zeros_like(eps), torch.ones_like(eps)).log_prob(eps).sum(-1) - log_sigma.sum(-1)
        dx = torch.exp(log_sigma) * eps
        if self.fast_tril is not None:
            dx = dx @ self._unit_tril().T
        return mu + dx, log_q

    def _fast_log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.fast(z)
        mu, log_sigma = h[..., :self.n_fast], h[..., self.n_fast:]
        dx = x - mu
        if self.fast_tril is not None:
            dx = torch.linalg.solve_triangular(self._unit_tril(), dx.unsqueeze(-1), upper=False,
                                               unitriangular=True).squeeze(-1)
        eps = dx * torch.exp(-log_sigma)
        return Normal(torch.zeros_like(eps), torch.ones_like(eps)).log_prob(eps).sum(-1) - log_sigma.sum(-1)

    def _slow_transform(self):
        """Base box -> slow value (the composed spline layers, generative direction)."""
        return self.slow.transform()

    def slow_sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z (n, k), log q(z) (n,))``, reparameterised."""
        base = self.slow.base()
        z0 = base.rsample((int(n),))
        z, ladj = self._slow_transform().call_and_ladj(z0)
        return z, base.log_prob(z0) - ladj

    def slow_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log q(z)``, shape (n,), for slow values ``z (n, k)`` inside the box."""
        t = self._slow_transform()
        z0 = t.inv(z)
        _, ladj = t.call_and_ladj(z0)
        return self.slow.base().log_prob(z0) - ladj

    def sample_latent(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z (n, k), X (n, D - k), log q(z, X) (n,))``, reparameterised (gradients flow)."""
        z, log_qz = self.slow_sample(n)
        if self.fast is None:
            return z, z.new_zeros(z.shape[0], 0), log_qz
        x, log_qx = self._fast_sample(z)
        return z, x, log_qz + log_qx

    def latent_log_prob(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log q(z) + log q(X | z)``, shape (n,)."""
        lp = self.slow_log_prob(z)
        if self.fast is not None:
            lp = lp + self._fast_log_prob(z, x)
        return lp

    # ------------------------------------------------------------------ public API
    def sample(self, n: int, return_latent: bool = False):
        """Draw ``n`` samples: ``(y (n, D), log q(y) (n,))`` [+ ``z (n, k)`` if ``return_latent``].

        Reparameterised: call under ``torch.no_grad()`` when no gradient is needed.
        """
        z, x, lq = self.sample_latent(n)
        y, ladj = self.decoder().call_and_ladj(torch.cat([z, x], dim=-1))
        out = (y, lq - ladj)
        return (*out, z) if return_latent else out

    def latent(self, y: torch.Tensor) -> torch.Tensor:
        """``[z; X] = G^-1(y)``, shape ``(n, D)``."""
        return self.decoder().inv(y)

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """Slow latent ``z`` of coordinates ``y (n, D)``, shape ``(n, k)``, inside ``[-B, B]``."""
        return self.latent(y)[..., :self.n_slow]

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        """``log q(y)``, shape (n,)."""
        g = self.decoder()
        u = g.inv(y)
        _, ladj = g.call_and_ladj(u)
        return self.latent_log_prob(u[..., :self.n_slow], u[..., self.n_slow:]) - ladj

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Coordinates ``y (n, D)`` for slow ``z (n, k)``; the fast part is drawn from ``q(X | z)`` unless given."""
        if self.fast is not None and x is None:
            x = self._fast_sample(z)[0]
        elif x is None:
            x = z.new_zeros(z.shape[0], 0)
        return self.decoder()(torch.cat([z, x], dim=-1))
