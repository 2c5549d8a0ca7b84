"""Stopping a fine-tune on a plateau of its validation error, read from ``optim.plateau``::

    optim:
      plateau: {window: 0.2, tolerance: 0.05, min_epochs: 10}

After each validation at epoch e >= ``min_epochs``, training stops when the best primary metric (an
error: lower is better) improved by less than ``tolerance`` (relative) over the last ``window`` share
of the epochs, i.e. best(<= e) > (1 - tolerance) * best(<= (1 - window) * e). ``max_epochs`` stays the
cap. The validations are kept in ``CHECKPOINT_DIR/validations.json`` (``[[epoch, value], ...]`` and
``stopped_at``), so that a resumed run knows its history and a stopped run does not train on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.errors import PruneError

HISTORY = "validations.json"


@dataclass(frozen=True)
class Plateau:
    window: float = 0.2      #: share of the epochs the improvement is measured over
    tolerance: float = 0.05  #: relative improvement below which the error has plateaued
    min_epochs: float = 10.0  #: no stop before this epoch

    @classmethod
    def from_optim(cls, optim: dict) -> Plateau | None:
        """``optim.plateau`` (None when absent), checked."""
        given = optim.get("plateau")
        if given is None:
            return None
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise PruneError(f"optim.plateau: unknown key(s) {sorted(unknown)}; it takes window, tolerance, min_epochs")
        plateau = cls(**{k: float(v) for k, v in given.items()})
        if not (0 < plateau.window < 1 and 0 <= plateau.tolerance < 1 and plateau.min_epochs >= 0):
            raise PruneError(f"optim.plateau {given}: window must lie in (0, 1), tolerance in [0, 1), min_epochs >= 0")
        return plateau

    def reached(self, history: list[tuple[float, float]]) -> bool:
        """Whether the errors ``[(epoch, value), ...]`` (in epoch order) have plateaued at their last epoch."""
        if not history or history[-1][0] < self.min_epochs:
            return False
        change = late_change(history, self.window)
        return change is not None and change > -self.tolerance


def late_change(history: list[tuple[float, float]], window: float) -> float | None:
    """The relative change of the best (lowest) error over the last ``window`` share of ``[(x, error),
    ...]`` (x: epochs or steps, in order): best(all) / best(x <= (1 - window) * last x) - 1, negative
    while it still improves; None when no point lies before the window."""
    horizon = (1 - window) * history[-1][0]
    before = [value for x, value in history if x <= horizon]
    return min(value for _, value in history) / min(before) - 1 if before else None


def trained_epochs(checkpoint_dir: Path) -> tuple[float, bool]:
    """(the last validated epoch, whether the run stopped on its plateau) of a run with ``optim.plateau``."""
    path = Path(checkpoint_dir) / HISTORY
    if not path.is_file():
        raise PruneError(f"{path} not found: the run in {checkpoint_dir} was not trained with optim.plateau")
    history = json.loads(path.read_text())
    return history["validations"][-1][0], history["stopped_at"] is not None


class _PlateauReached(Exception):
    pass


class StopsOnPlateau:
    """Mixin for fairchem trainers (before ``OCPTrainer`` in the bases): ``optim.plateau`` (see module)."""

    def _history_path(self) -> Path:
        return Path(self.config["cmd"]["checkpoint_dir"]) / HISTORY

    def _read_history(self) -> dict:
        path = self._history_path()
        return json.loads(path.read_text()) if path.is_file() else {"validations": [], "stopped_at": None}

    def train(self, *args, **kwargs) -> None:
        plateau = Plateau.from_optim(self.config["optim"])
        if plateau is None:
            return super().train(*args, **kwargs)
        stopped = self._read_history()["stopped_at"]
        if stopped is not None and stopped <= self.step:
            logging.info(f"plateau: this run stopped on its plateau at step {stopped}; nothing to train")
            return None
        try:
            return super().train(*args, **kwargs)
        except _PlateauReached:
            return None

    def update_best(self, primary_metric, val_metrics, *args, **kwargs) -> None:
        super().update_best(primary_metric, val_metrics, *args, **kwargs)
        plateau = Plateau.from_optim(self.config["optim"])
        if plateau is None or "mae" not in primary_metric:
            return
        history = self._read_history()
        validations = [(e, v) for e, v in history["validations"] if e < self.epoch] + [
            (self.epoch, float(val_metrics[primary_metric]["metric"]))]
        reached = plateau.reached(validations)
        record = {"validations": validations, "stopped_at": self.step if reached else None}
        if self.is_debug:
            return
        self._history_path().write_text(json.dumps(record) + "\n")
        if reached:
            logging.info(f"plateau: {primary_metric} improved by less than {100 * plateau.tolerance:g}% over the last "
                         f"{100 * plateau.window:g}% of {self.epoch:g} epochs; stopping (best {min(v for _, v in validations):.4g})")
            self.save(checkpoint_file="checkpoint.pt", training_state=True)
            raise _PlateauReached
