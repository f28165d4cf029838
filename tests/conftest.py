"""Shared fixtures.  Torch runs on one thread: the suite's batched ops are small,
and more threads slow down badly when the 2 cores are shared."""

import os

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
