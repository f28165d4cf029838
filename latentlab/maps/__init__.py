"""CG maps ``Q = f(q)``, their Jacobians and effective masses.

Every map takes positions ``(n_frames, n_atoms, 3)`` nm and returns
``(n_frames, n_cg)``; see :class:`CGMap`.  Build maps from spec strings with
:func:`parse_map` or directly from the classes.
"""

from latentlab.maps.base import CGMap, Coordinate
from latentlab.maps.internal import AngleMap, DihedralMap, DistanceMap, TriangleMap
from latentlab.maps.learned import EncoderMap, PCAMap
from latentlab.maps.linear import LinearMap
from latentlab.maps.mass import effective_mass, inverse_mass_read, masses_from_topology
from latentlab.maps.mass_model import MassModel, build_mass_model, mass_model_from_dict
from latentlab.maps.spec import KINDS, map_from_dict, parse_map, select_atoms, spec_for_atoms, suggested_map

__all__ = [
    "CGMap", "Coordinate", "AngleMap", "DihedralMap", "DistanceMap", "TriangleMap", "EncoderMap", "PCAMap",
    "LinearMap", "effective_mass", "inverse_mass_read", "masses_from_topology", "KINDS", "parse_map", "select_atoms",
    "spec_for_atoms", "suggested_map", "map_from_dict", "MassModel", "build_mass_model", "mass_model_from_dict",
]
