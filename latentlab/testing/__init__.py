"""Analytic test systems with exact answers (docs/theory.md, "Analytic systems for tests").

Like pymbar's ``testsystems``, they ship with the library so that users and
tests can check samplers and estimators against closed forms.
"""

from latentlab.testing.double_well import DoubleWell2D
from latentlab.testing.gaussian_mixture import GaussianMixture2D
from latentlab.testing.three_atom import ThreeAtomSystem

__all__ = ["DoubleWell2D", "GaussianMixture2D", "ThreeAtomSystem"]
