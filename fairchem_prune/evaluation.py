"""Scoring a checkpoint on an LMDB with fairchem's own inference path and Evaluator metrics.

The model, its normalizers and element references are restored exactly as fairchem's
``OCPCalculator`` restores them from a checkpoint; predictions come from ``OCPTrainer.predict``
(denormalised, in eV and eV/Å) and metrics from ``fairchem.core.modules.evaluator.Evaluator``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from fairchem.core.common.relaxation.ase_utils import OCPCalculator
from fairchem.core.datasets import data_list_collater
from fairchem.core.modules.evaluator import Evaluator
from torch.utils.data import DataLoader
from tqdm import tqdm

from fairchem_prune.checkpoints import read_checkpoint
from fairchem_prune.datasets.lmdb_io import lmdb_files, open_lmdb_dataset
from fairchem_prune.graphs import build_graphs_per_structure

S2EF_METRICS = {"energy": ["mae"], "forces": ["mae", "cosine_similarity"]}


class _UnfittedScaleFactors(logging.Filter):
    """Drops fairchem's per-module "Scale factor ... is not fitted" warnings (an unfitted scale
    factor is the identity) and counts them instead."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "is not fitted" in record.getMessage():
            self.count += 1
            return False
        return True


def load_trainer(checkpoint: str | Path, device: str = "cpu"):
    """fairchem's trainer holding the checkpoint's model, normalizers and element references; its model
    builds each structure's graph on its own (:mod:`fairchem_prune.graphs`), so that a batch mixing
    molecules and slabs gives what one structure at a time gives, whatever the checkpoint's config says."""
    read_checkpoint(checkpoint)  # clear error for a missing / corrupt file
    previous = logging.root.level
    logging.disable(logging.INFO)  # fairchem logs its whole config at INFO level here
    try:
        with warnings.catch_warnings():  # fairchem's torch.load(weights_only=False) warns on every load
            warnings.filterwarnings("ignore", message=".*weights_only=False.*", category=FutureWarning)
            calculator = OCPCalculator(checkpoint_path=str(checkpoint), cpu=device == "cpu", seed=0)
    finally:
        logging.disable(logging.NOTSET)
        logging.root.setLevel(previous)
    build_graphs_per_structure(calculator.trainer.model)
    return calculator.trainer


def evaluate_checkpoint(
    checkpoint: str | Path,
    lmdb: str | Path,
    metrics: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """Metrics (``{"energy_mae": ..., "forces_mae": ...}``, eV and eV/Å) of ``checkpoint`` on the
    fairchem LMDB file or folder ``lmdb``. Forces are scored on the free atoms only when the
    checkpoint's config says ``eval_on_free_atoms`` (as fairchem's validation does)."""
    return evaluate_on_datasets(checkpoint, {"data": lmdb}, metrics, batch_size, device, progress)["data"]


def evaluate_on_datasets(
    checkpoint: str | Path,
    datasets: dict[str, str | Path],
    metrics: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_checkpoint` on each of ``datasets`` (name -> LMDB), loading the model once."""
    for lmdb in datasets.values():
        lmdb_files(lmdb)
    metrics = metrics or S2EF_METRICS
    trainer = load_trainer(checkpoint, device)
    return {name: _evaluate(trainer, Path(checkpoint), lmdb, metrics, batch_size, progress)
            for name, lmdb in datasets.items()}


def _evaluate(trainer, checkpoint: Path, lmdb: str | Path, metrics: dict[str, list[str]], batch_size: int,
              progress: bool) -> dict[str, float]:
    free_atoms_only = trainer.config["outputs"].get("forces", {}).get("eval_on_free_atoms", False)
    loader = DataLoader(
        open_lmdb_dataset(lmdb),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=lambda items: data_list_collater(items, otf_graph=True),
    )
    evaluator = Evaluator(task="s2ef", eval_metrics=metrics)
    results: dict = {}
    unfitted = _UnfittedScaleFactors()
    logging.root.addFilter(unfitted)
    try:
        for batch in tqdm(loader, desc=f"evaluating {checkpoint.name} on {Path(lmdb).name}", disable=not progress):
            batch = batch.to(trainer.device)
            prediction = trainer.predict(batch, per_image=False, disable_tqdm=True)
            target = {key: getattr(batch, key).float() for key in metrics}
            # OCPTrainer gives system-level outputs as (N, 1); the Evaluator wants the targets' shapes
            prediction = {k: prediction[k].detach().float().reshape(target[k].shape) for k in metrics}
            natoms = batch.natoms
            if "forces" in metrics and free_atoms_only:
                free = batch.fixed == 0
                prediction["forces"], target["forces"] = prediction["forces"][free], target["forces"][free]
                natoms = torch.zeros_like(natoms).index_add_(0, batch.batch[free], torch.ones_like(batch.batch[free]))
            prediction["natoms"] = target["natoms"] = natoms
            results = evaluator.eval(prediction, target, prev_metrics=results)
    finally:
        logging.root.removeFilter(unfitted)
    if unfitted.count:
        logging.info(f"{checkpoint}: scale factors not fitted (identity), as trained")
    return {name: float(value["metric"]) for name, value in results.items()}
