"""The one interface of a potential energy in torch, and the lin-log cap.

An :class:`Energy` is a ``torch.nn.Module`` that maps batched positions
``(n_frames, n_atoms, 3)`` in nm to energies ``(n_frames,)`` in kJ/mol and
is differentiable with autograd (forces ``F = -grad U``).  Parameters are
buffers, so ``.to(device, dtype)`` moves them with the module.
"""

from __future__ import annotations

import torch

from latentlab.validation import check_positions, check_positive


class Energy(torch.nn.Module):
    """Base class of batched, differentiable potential energies.

    Attributes
    ----------
    n_atoms : int
        Number of atoms the energy expects.
    """

    n_atoms: int = 0

    def energy(self, positions: torch.Tensor) -> torch.Tensor:
        """``U``: positions ``(n_frames, n_atoms, 3)`` nm -> ``(n_frames,)`` kJ/mol (subclasses)."""
        raise NotImplementedError

    def forward(self, positions) -> torch.Tensor:
        """:meth:`energy` of validated positions (a tensor of the right shape goes straight through, keeping
        its dtype and device: the hot path of training)."""
        ok = isinstance(positions, torch.Tensor) and positions.dim() == 3 and positions.shape[1:] == (self.n_atoms, 3) \
            and positions.is_floating_point()
        x = positions if ok else check_positions(positions, "positions", n_atoms=self.n_atoms)
        return self.energy(x)

    def energy_and_forces(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        """``(U, F = -grad U)``, shapes ``(n_frames,)`` kJ/mol and ``(n_frames, n_atoms, 3)`` kJ/mol/nm, detached."""
        x = torch.as_tensor(positions)
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            u = self(x)
            (grad,) = torch.autograd.grad(u.sum(), x)
        return u.detach(), -grad.detach()

    def forces(self, positions) -> torch.Tensor:
        """``F = -grad U``, shape ``(n_frames, n_atoms, 3)``, kJ/mol/nm."""
        return self.energy_and_forces(positions)[1]


def linlog_cap(u: torch.Tensor, threshold: float = 1.0e4) -> torch.Tensor:
    """Energies above ``threshold`` grow logarithmically: ``t + t log(1 + (u - t)/t)``.

    The function is the identity below ``threshold`` and continuous with a
    continuous first derivative there; above it, ``u = 1e12`` becomes ~2e5
    (for ``t = 1e4``), so one configuration with overlapping atoms early in
    training cannot blow the gradient up.  Use it in the training loss only;
    importance weights always use the uncapped energy.  Infinite or NaN
    energies become ``t + t log(1 + 1e30 / t)``: finite, with a zero gradient.

    Parameters
    ----------
    u : torch.Tensor, kJ/mol
    threshold : float, kJ/mol, > 0
    """
    t = check_positive(threshold, "threshold", "kJ/mol")
    safe = torch.nan_to_num(u, nan=1e30, posinf=1e30, neginf=-1e30)
    over = torch.clamp(safe - t, min=0.0)
    return torch.where(safe > t, t + t * torch.log1p(over / t), safe)
