"""Shared fixtures.  Torch runs on one thread: the suite's batched ops are small,
and more threads slow down badly when the 2 cores are shared."""

import os
import time

import pytest
import torch

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(ROOT, "artifacts")

#: Devices every device-parametrised test runs on (CUDA only where present).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def artifacts_dir():
    """Folder for test artefacts (plots, screenshots) kept after the run."""
    os.makedirs(ARTIFACTS, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def alanine_topology():
    """mdtraj topology of the project's alanine dipeptide structure (22 atoms)."""
    import mdtraj as md

    path = os.path.join(ROOT, "latentlab", "data", "structures", "alanine-dipeptide.pdb")
    return md.load_pdb(path)


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    """``$LATENTLAB_MODELS`` in the test's own folder: the dashboard writes no model or flow file elsewhere."""
    monkeypatch.setenv("LATENTLAB_MODELS", str(tmp_path / "models"))


@pytest.fixture(scope="module")
def queue(request):
    """The dashboard's job queue that a test module's tests share: ``QUEUE_WORKERS`` worker processes (a global
    of the module, default 1), warmed up, 2 s stop grace; shut down after the module."""
    from latentlab_app.jobs import JobQueue

    q = JobQueue(workers=getattr(request.module, "QUEUE_WORKERS", 1), stop_grace=2.0)
    q.warm_up()
    yield q
    q.shutdown()


def wait_until(condition, seconds: float, step: float = 0.05) -> bool:
    """Poll ``condition()`` every ``step`` s: True as soon as it holds, else its value after ``seconds`` s."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()
