"""Kinetics of trajectories in Q: autocorrelation times, Markov state models, first passages.

The estimators run on deeptime (Hoffmann et al., Mach. Learn.: Sci. Technol. 3, 015009, 2022)
and take independent trajectories that are never joined (walkers of a SIM file, replicas
and restarts of a data set).  Entry points:

* :class:`Trajectories` -- ``from_dataset``, ``from_simulation``, ``from_arrays``;
* :func:`analyze` -- ACFs and integrated autocorrelation times, an MSM with implied
  timescales vs lag and Bayesian 95 % intervals, a Chapman-Kolmogorov test, and mean
  first-passage times between named basins; returns a :class:`KineticsResult`
  (``to_dict()`` for JSON);
* :func:`compare` -- model vs reference at one frame spacing, on the reference's states,
  lag and basins (:class:`KineticsComparison`);
* :func:`plot_kinetics` -- ACFs, implied timescales and the MFPT table in one figure;
* :func:`calibrate` -- the friction gamma at which a CG model's chosen observable matches the
  reference's (:mod:`latentlab.kinetics.calibration`, ``latentlab calibrate``).

See docs/kinetics.md.
"""

from latentlab.kinetics.acf import acf_analysis, autocorrelation, integrated_time
from latentlab.kinetics.analysis import KineticsComparison, KineticsResult, analyze, compare
from latentlab.kinetics.basins import BUILTIN, BasinSet, parse_basins, resolve_basins
from latentlab.kinetics.calibration import CalibrationCancelled, CalibrationResult, calibrate
from latentlab.kinetics.targets import CalibrationTarget, reference_target
from latentlab.kinetics.mfpt import mfpt_direct
from latentlab.kinetics.trajectories import Trajectories


def plot_kinetics(*args, **kwargs):
    """See :func:`latentlab.kinetics.plotting.plot_kinetics` (imports matplotlib when called)."""
    from latentlab.kinetics.plotting import plot_kinetics as _plot

    return _plot(*args, **kwargs)


__all__ = ["Trajectories", "analyze", "compare", "KineticsResult", "KineticsComparison", "plot_kinetics",
           "autocorrelation", "integrated_time", "acf_analysis", "mfpt_direct", "parse_basins", "resolve_basins",
           "BasinSet", "BUILTIN", "calibrate", "reference_target", "CalibrationResult", "CalibrationTarget",
           "CalibrationCancelled"]
