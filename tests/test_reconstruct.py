"""Nearest-frame reconstruction of all-atom structures from latent states (no UI)."""

import numpy as np
import pytest

from latentlab.data import load
from latentlab.reconstruct import NearestFrameReconstructor, atom_correspondence, pdb_string, placeholder_topology


@pytest.fixture(scope="module")
def alanine():
    ds = load("alanine-dipeptide").select_frames(slice(0, 2000))
    return ds, ds.map("dihedrals:phi-psi")


def test_reference_latent_state_maps_back_to_its_own_frame(alanine):
    ds, cg_map = alanine
    rec = NearestFrameReconstructor.from_dataset(ds, cg_map)
    picks = np.array([3, 500, 1999])
    frames, dist = rec.nearest(rec.latent[picks])
    assert np.all(dist < 1e-9)
    x, frames, _ = rec.reconstruct(rec.latent[picks])
    assert x.shape == (3, ds.n_atoms, 3)
    # superposition keeps internal geometry: same latent coordinates as the raw frames
    np.testing.assert_allclose(cg_map(x.astype(np.float64)).numpy(), rec.latent[frames], atol=1e-4)


def test_periodic_coordinates_use_the_minimum_image(alanine):
    ds, cg_map = alanine
    rec = NearestFrameReconstructor.from_dataset(ds, cg_map)
    q = rec.latent[10].copy()
    shifted = q + 2 * np.pi  # the same angles
    assert rec.nearest(shifted)[0][0] == rec.nearest(q)[0][0]


def test_atom_correspondence_maps_a_subset_block_onto_the_full_topology(alanine):
    ds, _ = alanine
    sub = ds.topology.subset(ds.topology.select("name CA or name N"))
    idx = atom_correspondence(sub, ds.topology)
    assert [ds.topology.atom(i).name for i in idx] == [a.name for a in sub.atoms]


def test_placeholder_topology_and_pdb_text():
    top = placeholder_topology(3)
    text = pdb_string(top, np.zeros((3, 3)))
    assert text.count("ATOM") == 3


def test_wrong_shapes_are_refused(alanine):
    ds, cg_map = alanine
    with pytest.raises(ValueError, match="positions"):
        NearestFrameReconstructor(cg_map, np.zeros((5, 3)))
    rec = NearestFrameReconstructor.from_dataset(ds, cg_map)
    with pytest.raises(ValueError, match="coordinates"):
        rec.nearest(np.zeros((2, 3)))
