"""Data sets larger than memory (lazy HDF5) and data-parallel training (torch.distributed, gloo on CPU)."""

import os
import socket

import numpy as np
import pytest
import torch

from latentlab.data import load
from latentlab.training import ForceMatching, Trainer


def test_a_lazy_data_set_reads_frames_on_demand_and_trains_the_same_model(tmp_path):
    eager = load("chignolin").select_frames(slice(0, 3000))
    path = str(tmp_path / "chig.h5")
    eager.save(path)
    lazy = load(path, lazy=True)
    assert lazy.lazy and not eager.lazy and lazy.n_frames == 3000
    idx = np.array([2999, 5, 5, 1200])
    assert np.array_equal(lazy.positions[idx], eager.positions[idx])
    assert np.array_equal(lazy.select_frames(slice(100, 200)).positions[10:20], eager.positions[110:120])
    pos, frc = lazy.frame_block(10, 30)
    assert pos.shape == (20, 10, 3) and np.array_equal(frc, eager.forces[10:30])
    kwargs = dict(epochs=2, hidden=(16,), seed=1, device="cpu", patience=0)
    a, b = Trainer(**kwargs).fit(eager), Trainer(**kwargs).fit(lazy)
    for x, y in zip(a.potential.state_dict().values(), b.potential.state_dict().values()):
        assert torch.equal(x, y)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, path, out):
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    trainer = Trainer(ForceMatching(), epochs=3, hidden=(16, 16), batch_size=64, seed=4, device="cpu",
                      dtype=torch.float64, patience=0, out=out, distributed=True)
    trainer.fit(load(path))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_train_the_same_weights_as_one(tmp_path):
    import torch.multiprocessing as mp

    from latentlab.model import CGModel

    path = str(tmp_path / "three.h5")
    load("three-atom", n=1500, seed=2).save(path)
    single = Trainer(ForceMatching(), epochs=3, hidden=(16, 16), batch_size=64, seed=4, device="cpu",
                     dtype=torch.float64, patience=0).fit(load(path))
    out = str(tmp_path / "ddp.pt")
    mp.start_processes(_worker, args=(2, _free_port(), path, out), nprocs=2, join=True, start_method="spawn")
    ddp = CGModel.load(out)
    assert ddp.training["processes"] == 2 and not os.path.exists(out + ".ckpt")
    # The same steps up to the order of floating-point sums (float64): the gradients differ by ~1e-16, and Adam
    # turns the sign of a near-zero gradient component into a step of its own, so weights agree to ~1e-8.
    for (key, x), y in zip(single.potential.state_dict().items(), ddp.potential.state_dict().values()):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6, msg=lambda m: f"{key}: {m}")
    assert [h["val_loss"] for h in ddp.training["history"]] == pytest.approx(
        [h["val_loss"] for h in single.training["history"]], rel=1e-9)
