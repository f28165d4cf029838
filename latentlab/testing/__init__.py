"""Analytic test systems with exact answers (THEORY.md, "Analytic systems for tests").

Like pymbar's ``testsystems``, they ship with the library so that users and
tests can check samplers and estimators against closed forms.
"""

from latentlab.testing.three_atom import ThreeAtomSystem

__all__ = ["ThreeAtomSystem"]
