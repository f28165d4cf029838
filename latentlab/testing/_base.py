"""What the analytic test systems share: their thermal energy and the checks of their parameters."""

from __future__ import annotations

from latentlab.units import KB
from latentlab.validation import check_positive, fail


class AnalyticSystem:
    """Base of the analytic systems (dataclasses with a ``temperature`` field in K)."""

    temperature: float

    @property
    def kT(self) -> float:
        """Thermal energy in kJ/mol."""
        return KB * self.temperature

    def _check_positive(self, units: dict) -> None:
        """Check that each named field is a finite number > 0; ``units`` maps field name -> unit."""
        for name, unit in units.items():
            check_positive(getattr(self, name), name, unit)

    def _check_counts(self, names, minimum: int = 1, fix: str = "pass a positive integer") -> None:
        """Check that each named integer field is at least ``minimum``."""
        for name in names:
            if int(getattr(self, name)) < minimum:
                fail(name, f"got {getattr(self, name)}", fix)
