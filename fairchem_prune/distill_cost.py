"""Cost per training step of each distillation option (``task.distill``), measured side by side: the
same distillation config, teacher, student, batch and thread count for every option; the median of
repeated full steps (student and teacher passes, every loss term, backward pass and optimizer step),
as fairchem's training loop runs them.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fairchem_prune.errors import PruneError

#: option name -> the task.distill settings it adds to the config's own
OPTIONS = {
    "config": {},
    "rattle": {"rattle_fraction": 0.5},
    "teacher MD (5 steps)": {"md_fraction": 0.5, "md_steps": 5},
    "Jacobian (1 row)": {"jacobian_weight": 1.0, "jacobian_rows": 1},
    "per-atom energies": {"atom_energy_weight": 1.0},
}


def _step(trainer, batch) -> float:
    start = time.perf_counter()
    out = trainer._forward(batch)
    trainer._backward(trainer._compute_loss(out, batch))
    return time.perf_counter() - start


def measure_options(config: str | Path, overrides: Sequence[str] = (), options: dict | None = None,
                    repeats: int = 5, warmup: int = 1, progress: bool = True) -> dict:
    """``{"rows": [{"option", "settings", "step_s", "relative", "error"}], "settings": {...}}``: seconds
    per step (median of ``repeats`` after ``warmup``) of each option on the first training batch of
    ``config`` (``overrides`` as on fairchem's command line), relative to ``"config"``. One trainer serves
    every option (fairchem opens an LMDB once per process); each option's settings are checked as the
    trainer checks them. An option the architecture does not have gets its one-line reason in ``error``."""
    import dataclasses

    from fairchem_prune.console import progress as bar_of
    from fairchem_prune.fairchem_runs import build_trainer
    from fairchem_prune.trainers.distill import DistillSettings

    options = OPTIONS if options is None else options
    if repeats < 1 or warmup < 0:
        raise PruneError("--repeats must be at least 1 and --warmup at least 0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(["--mode", "train", "--config-yml", config, "--cpu", "--run-dir", tmp,
                                 "--timestamp-id", "cost", *overrides])
        trainer.model.train()
        batch = next(iter(trainer.train_loader))
        base = trainer.distill
        for name, settings in bar_of(options.items(), desc="distillation options", disable=not progress):
            row = {"option": name, "settings": settings, "step_s": None, "relative": None, "error": None}
            try:
                trainer.distill = DistillSettings.from_task({"distill": {**dataclasses.asdict(base), **settings}})
                if trainer.distill.atom_energy_weight:
                    with trainer._architecture.atom_energies(trainer._unwrapped_model):
                        pass
                times = [_step(trainer, batch) for _ in range(warmup + repeats)][warmup:]
                row["step_s"] = statistics.median(times)
            except PruneError as err:
                row["error"] = str(err)
            rows.append(row)
        trainer.distill = base
    reference = rows[0]["step_s"]
    for row in rows:
        if row["step_s"] is not None and reference:
            row["relative"] = row["step_s"] / reference
    return {"rows": rows, "settings": {"config": str(config), "overrides": list(overrides), "repeats": repeats,
                                       "warmup": warmup, "threads": torch.get_num_threads(),
                                       "batch_structures": int(batch.natoms.numel()), "batch_atoms": int(batch.natoms.sum())}}


def format_table(result: dict) -> str:
    lines = ["| option | s / step | relative to the config's |", "|---|---:|---:|"]
    for row in result["rows"]:
        if row["error"]:
            lines.append(f"| {row['option']} | not available: {row['error']} | |")
        else:
            lines.append(f"| {row['option']} | {row['step_s']:.3f} | {row['relative']:.2f}x |")
    return "\n".join(lines)
