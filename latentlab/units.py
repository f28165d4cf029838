"""One unit system for the whole library (the OpenMM one).

Lengths nm, times ps, masses amu (g/mol), energies kJ/mol, temperatures K,
forces kJ/mol/nm, angles radians.  Data sets store forces ``F = -grad U``.
"""

from __future__ import annotations

#: Boltzmann constant in kJ/(mol K): CODATA 2018 k_B = 1.380649e-23 J/K times
#: N_A = 6.02214076e23 /mol, divided by 1000 (J -> kJ).
KB = 0.008314462618

#: 1 kcal = 4.184 kJ (thermochemical calorie, exact by definition).
KCAL_TO_KJ = 4.184

#: 1 Angstrom = 0.1 nm (exact).
ANGSTROM_TO_NM = 0.1

#: Units of the latent friction gamma in each friction model (docs/theory.md section 4): ``-gamma dQ/dt``
#: (amu/ps for Q in nm) or the same collision rate on every atom (1/ps, as OpenMM's LangevinIntegrator).
FRICTION_UNITS = {"coordinate": "amu/ps", "atomic": "1/ps"}


def kT(temperature: float) -> float:
    """Thermal energy ``k_B T`` in kJ/mol for ``temperature`` in K."""
    from latentlab.validation import check_positive

    check_positive(temperature, "temperature", unit="K")
    return KB * float(temperature)


def beta(temperature: float) -> float:
    """Inverse thermal energy ``1 / (k_B T)`` in mol/kJ."""
    return 1.0 / kT(temperature)
