"""Data-parallel training over processes with ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

Every process holds the whole model and the whole (precomputed) target set, draws the same shuffled
batches from the same seed, and works on its own share of each batch; the gradients are summed over
the processes before every optimiser step, so the run takes the same steps as one process with the
same global batch (up to the order of floating-point sums).  Rank 0 alone writes checkpoints and the
model, and reports progress.

Why not ``torch.nn.parallel.DistributedDataParallel``: force matching differentiates the loss of a
gradient (``grad_Q V`` with ``create_graph=True``), and the losses call the potential's methods rather
than its ``forward``; DDP's reducer hooks assume one plain forward and backward.  One explicit
all-reduce of the flattened gradient per step is the same collective without those assumptions.

Launch with ``torchrun --nproc-per-node N -m latentlab train DATA --out MODEL --distributed``.
"""

from __future__ import annotations

import os

import torch


def init_from_environment(device: str = "cpu") -> "DataParallel":
    """Join the process group that ``torchrun`` describes (RANK, WORLD_SIZE, MASTER_ADDR, ...)."""
    import torch.distributed as dist

    from latentlab.validation import fail

    if not dist.is_available():
        fail("--distributed", "this torch build has no torch.distributed", "install a torch with distributed support")
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            fail("--distributed", "no process group to join (RANK/WORLD_SIZE are not set)",
                 "launch with torchrun --nproc-per-node N -m latentlab train ... --distributed")
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return DataParallel()


class DataParallel:
    """This process's place in a data-parallel run and the few collectives the training loop needs."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's share of a batch of frame indices (contiguous, sizes differing by at most one)."""
        return batch.tensor_split(self.world)[self.rank]

    def sum_gradients(self, parameters) -> None:
        """Sum every parameter's gradient over the processes (one all-reduce of the flattened gradients)."""
        params = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def total(self, value: float, device) -> float:
        """Sum of a number over the processes."""
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        self.dist.all_reduce(t)
        return float(t)

    def any(self, flag: bool, device) -> bool:
        """True when any process says so (a stop request must end every process at the same batch)."""
        return self.total(1.0 if flag else 0.0, device) > 0

    def barrier(self) -> None:
        self.dist.barrier()
