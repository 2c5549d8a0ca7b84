"""torchtnt callbacks that fairchem-prune's fine-tuning configs add to ``runner.callbacks`` (imported by
``fairchem -c`` only)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from torchtnt.framework.callback import Callback

METRICS_FILE = "metrics.jsonl"


class MetricsLog(Callback):
    """torchtnt callback: JSON lines in ``<log_dir>/metrics.jsonl`` (rank 0): ``{"split": "train",
    "step", "epoch", "loss", "lr", "time"}`` per train step and ``{"split": "val", "step", "time", "loss",
    "<dataset>,<task>,<metric>": ...}`` per evaluation (the values fairchem's eval unit logs, this rank's
    share); ``time``: seconds since the epoch (``time.time()``) at the record's writing."""

    def __init__(self, path: str | None = None):
        self.path = Path(path) if path else None

    def _write(self, unit, record: dict) -> None:
        from fairchem.core.common import distutils

        if not distutils.is_master():
            return
        path = self.path or Path(unit.job_config.metadata.log_dir) / METRICS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps({**record, "time": time.time()}) + "\n")

    def on_train_step_end(self, state, unit) -> None:
        loss = unit.last_loss
        self._write(unit, {
            "split": "train", "step": unit.train_progress.num_steps_completed,
            "epoch": unit.train_progress.num_epochs_completed,
            "loss": float(loss.item() if hasattr(loss, "item") else loss),
            "lr": float(unit.scheduler.get_last_lr()[0]) if unit.scheduler is not None else None,
        })

    def on_eval_end(self, state, unit) -> None:
        evaluator = getattr(unit, "eval_unit", unit)
        record = {"split": "val", "step": unit.train_progress.num_steps_completed}
        loss = evaluator.total_loss_metrics.metric
        record["loss"] = float(loss.item() if hasattr(loss, "item") else loss)
        for task, datasets in evaluator.running_metrics.items():
            for dataset, metrics in datasets.items():
                for name, metric in metrics.items():
                    value = metric.total / metric.numel if metric.numel else float("nan")
                    record[f"{dataset},{task},{name}"] = float(value.item() if hasattr(value, "item") else value)
        self._write(unit, record)
