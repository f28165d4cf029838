"""latentlab: machine-learned coarse-graining of molecular dynamics.

Units everywhere (see :mod:`latentlab.units`): nm, ps, amu, kJ/mol, K.
Positions have shape ``(n_frames, n_atoms, 3)``; CG coordinates
``(n_frames, n_cg)``.
"""

__version__ = "0.1.0"
