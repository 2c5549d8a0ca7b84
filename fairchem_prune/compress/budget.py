"""The accuracy budget of ``fairchem-prune compress`` and the rule that picks a candidate with it.

A budget is relative (``5%``: at most 5% above the reference's validation error) or absolute with a
unit (``2meV/A``: at most 2 meV/Å above it), and above 0. The reference is the full model fine-tuned
under the same compute budget as the candidates. Among the candidates within the budget, the rule
(``--pick``, :data:`PICKS`) takes the fewest blocks (``fewest``, the default; between candidates of the
same block count, BR and BR+KD, the lower error) or the highest measured throughput (``fastest``), of
those whose throughput is not flagged (see :mod:`fairchem_prune.bench_harness`); where every one within
the budget is flagged, ``fastest`` falls back to ``fewest`` (and the report says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fairchem_prune.errors import PruneError

#: budget units -> (factor to fairchem's units, eV or eV/Å; whether the unit is per Å)
UNITS = {"mev/a": (1e-3, True), "mev/å": (1e-3, True), "ev/a": (1.0, True), "ev/å": (1.0, True),
         "mev": (1e-3, False), "ev": (1.0, False)}
_BUDGET = re.compile(r"\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%|[a-zA-Zå/Å]+)\s*")
#: ``--pick`` rules, as the report states them
PICKS = {"fewest": "the fewest blocks within the budget (ties: the lower error)",
         "fastest": "the highest measured throughput within the budget, of the throughputs not flagged"}
#: substrings of fairchem metric names that are errors (lower is better)
ERROR_METRICS = ("mae", "mse", "rmse")


@dataclass(frozen=True)
class Budget:
    text: str          #: as the user wrote it
    relative: float | None = None   #: fraction above the reference (0.05 for 5%)
    absolute: float | None = None   #: amount above the reference, in the metric's units (eV, eV/Å)

    def limit(self, reference: float) -> float:
        """The largest error within the budget of a reference error ``reference``."""
        return reference * (1.0 + self.relative) if self.relative is not None else reference + self.absolute


def parse_budget(text: str, metric: str | None) -> Budget:
    """``5%`` / ``2meV/A`` / ``0.01 eV`` for fairchem's primary ``metric`` (e.g. ``forces_mae``, eV/Å);
    ``metric`` None checks the text alone (before the metric is known)."""
    if metric is not None and not any(part in metric for part in ERROR_METRICS):
        raise PruneError(f"the task's primary metric {metric!r} is not an error (MAE, MSE, RMSE); "
                         "set evaluation_metrics.primary_metric to one, e.g. forces_mae")
    match = _BUDGET.fullmatch(str(text))
    if not match:
        raise PruneError(f"--budget {text!r}: give a relative budget such as 5% or an absolute one with a unit "
                         "such as 2meV/A or 10meV")
    value, unit = float(match.group(1)), match.group(2)
    if value <= 0:
        raise PruneError(f"--budget {text}: a budget is the error allowed above the full model's and must be above 0; "
                         "give e.g. 5% or 2meV/A")
    if unit == "%":
        return Budget(text, relative=value / 100.0)
    if unit.lower() not in UNITS:
        raise PruneError(f"--budget {text!r}: unknown unit {unit!r}; use % or one of meV/A, eV/A, meV, eV")
    factor, per_angstrom = UNITS[unit.lower()]
    if metric is not None and per_angstrom != metric.startswith("forces"):
        wanted = "meV/A or eV/A" if metric.startswith("forces") else "meV or eV"
        raise PruneError(f"--budget {text!r}: the primary metric {metric} is not in {unit}; give it in {wanted} or as %")
    return Budget(text, absolute=value * factor)


def trusted_fastest(candidates: list[dict]) -> dict | None:
    """The candidate of the highest ``samples_per_s`` among those with no ``flags`` (None if none)."""
    trusted = [c for c in candidates if not c.get("flags")]
    return max(trusted, key=lambda c: (c["samples_per_s"], -c["error"])) if trusted else None


def pick(candidates: list[dict], reference: float, budget: Budget,
         hint: str = "fine-tune longer (--epochs) or add distilled candidates (--distill)", by: str = "fewest") -> dict:
    """The candidate (``{"name", "blocks", "error", ...}``; ``samples_per_s`` and ``flags`` for
    ``by="fastest"``) within ``budget`` of the ``reference`` error that the rule ``by`` (:data:`PICKS`)
    takes. PruneError naming the closest one if none is within, and what else to try (``hint``)."""
    if by not in PICKS:
        raise PruneError(f"--pick must be one of {', '.join(PICKS)}, got {by!r}")
    limit = budget.limit(reference)
    within = [c for c in candidates if c["error"] <= limit]
    if within:
        fastest = trusted_fastest(within) if by == "fastest" else None
        return fastest or min(within, key=lambda c: (c["blocks"], c["error"]))
    closest = min(candidates, key=lambda c: c["error"])
    raise PruneError(
        f"no candidate is within {budget.text} of the full model's {reference:.4g} (at most {limit:.4g}); the closest is "
        f"{closest['name']} at {closest['error']:.4g} ({100 * (closest['error'] / reference - 1):+.1f}%); "
        f"loosen --budget, {hint}")
