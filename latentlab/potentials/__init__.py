"""CG potentials ``V_theta(Q)``: neural networks whose inputs respect the map, and their model files.

- :class:`CGPotential`: MLP ``V(Q)`` in kJ/mol with periodic (sin/cos) and
  standardised features, optional harmonic walls outside the data range and
  optional temperature conditioning ``V(Q, T)``.
- :func:`save_model` / :func:`load_model`: one self-describing file per model
  (map spec, units, temperature, normalisation, convention, effective-mass
  model, versions, training settings); loads without the training data.
"""

from latentlab.potentials.model import CGPotential
from latentlab.potentials.store import MODEL_FORMAT, MODEL_FORMAT_VERSION, load_model, save_model

__all__ = ["CGPotential", "save_model", "load_model", "MODEL_FORMAT", "MODEL_FORMAT_VERSION"]
