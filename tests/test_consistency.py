"""Level-set consistency check: consistent maps give round-off, inconsistent ones are caught."""

import json
import subprocess
import sys

import pytest
import torch

from latentlab.consistency import check_consistency
from latentlab.maps import EncoderMap, parse_map
from latentlab.testing import ThreeAtomSystem


@pytest.fixture(scope="module")
def three_atom_frames():
    system = ThreeAtomSystem()
    x, _ = system.sample(3000, seed=21)
    return system, x


@pytest.mark.parametrize("spec", ["triangle:0,1,2", "distances:0,1,2", "linear:0,1,2", "com:0,1;1,2"])
def test_consistent_maps_score_round_off(three_atom_frames, spec):
    system, x = three_atom_frames
    m = parse_map(spec, n_atoms=3, masses=system.masses_tensor())
    report = check_consistency(m, x, system.masses_tensor(), n_level_set_frames=100)
    assert report.score < 1e-12
    assert report.level_set["projection_failures"] == 0
    assert report.verdict() == "consistent"


def test_single_angle_and_dihedrals_of_flexible_chain_are_inconsistent():
    gen = torch.Generator().manual_seed(0)
    chain = torch.tensor([[0.0, 0, 0], [0.15, 0, 0], [0.2, 0.14, 0], [0.35, 0.15, 0.1]], dtype=torch.float64)
    x = chain + 0.01 * torch.randn(1000, 4, 3, generator=gen, dtype=torch.float64)
    masses = torch.tensor([12.0, 14.0, 12.0, 16.0], dtype=torch.float64)
    report = check_consistency(parse_map("dihedrals:0-1-2-3", n_atoms=4), x, masses)
    assert report.level_set["median"] > 1e-2 and report.verdict() == "inconsistent"
    assert report.binned["median"] > 1e-2
    # Six distances among four atoms fix the shape: consistent.
    assert check_consistency(parse_map("distances:0,1,2,3", n_atoms=4), x, masses).score < 1e-12


def test_alanine_dipeptide_phi_psi_are_measurably_inconsistent(alanine_topology):
    top = alanine_topology.topology
    gen = torch.Generator().manual_seed(1)
    x = torch.as_tensor(alanine_topology.xyz, dtype=torch.float64) + 0.005 * torch.randn(500, top.n_atoms, 3, generator=gen, dtype=torch.float64)
    masses = torch.tensor([a.element.mass for a in top.atoms], dtype=torch.float64)
    report = check_consistency(parse_map("dihedrals:phi-psi", topology=top), x, masses)
    assert report.level_set["median"] > 1e-3


def test_random_encoder_is_inconsistent(three_atom_frames):
    system, x = three_atom_frames
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(9, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    report = check_consistency(EncoderMap(net, [0, 1, 2], 2, n_atoms=3), x, system.masses_tensor())
    assert report.score > 1e-4 and report.verdict() == "inconsistent"


def test_consistency_cli_json_and_plot(tmp_path):
    png = tmp_path / "spread.png"
    out = subprocess.run([sys.executable, "-m", "latentlab.cli", "consistency", "three-atom", "--map", "triangle:0,1,2",
                          "--json", "--plot", str(png), "--frames", "3000"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["verdict"] == "consistent" and report["score"] < 1e-12
    assert set(report) >= {"map", "coordinates", "score", "level_set", "binned", "frames"}
    assert png.stat().st_size > 10000
    text = subprocess.run([sys.executable, "-m", "latentlab.cli", "consistency", "three-atom", "--frames", "300"],
                          capture_output=True, text=True, check=True).stdout
    assert text.startswith("map triangle:0,1,2 (3 coordinates: r1, r2, cos) on three-atom (300 frames): consistent")


def test_consistency_cli_reports_bad_map_without_traceback():
    out = subprocess.run([sys.executable, "-m", "latentlab.cli", "consistency", "three-atom", "--map", "distances:0-1,1-0"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert "Fix:" in out.stderr and "Traceback" not in out.stderr
