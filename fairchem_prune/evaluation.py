"""Scoring a checkpoint on an LMDB with fairchem's own inference path and Evaluator metrics.

The model, its normalizers and element references are restored exactly as fairchem's
``OCPCalculator`` restores them from a checkpoint; predictions come from ``OCPTrainer.predict``
(denormalised, in eV and eV/Å) and metrics from ``fairchem.core.modules.evaluator.Evaluator``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from fairchem.core.common.relaxation.ase_utils import OCPCalculator
from fairchem.core.datasets import data_list_collater
from fairchem.core.modules.evaluator import Evaluator
from torch.utils.data import DataLoader

from fairchem_prune.checkpoints import fit_identity_scale_factors, read_checkpoint
from fairchem_prune.console import chatter_to, progress
from fairchem_prune.datasets.lmdb_io import lmdb_files, open_lmdb_dataset
from fairchem_prune.graphs import build_graphs_per_structure

#: energy and force MAE (eV, eV/Å), force cosine, and the S2EF leaderboard's ranking metric: the share of
#: structures with energy within 0.02 eV and every force within 0.03 eV/Å (EFwT, Evaluator's threshold)
S2EF_METRICS = {"energy": ["mae"], "forces": ["mae", "cosine_similarity", "energy_forces_within_threshold"]}


def calculator(checkpoint: str | Path, device: str = "cpu", log: str | Path | None = None) -> OCPCalculator:
    """fairchem's ``OCPCalculator`` of ``checkpoint``, built with fairchem's logging (its whole config)
    sent to the file ``log`` (None: nowhere) rather than the console, and its unfitted scale factors
    stored as the identity they are (:func:`~fairchem_prune.checkpoints.fit_identity_scale_factors`:
    same outputs, bit for bit, and no warning per factor on every prediction)."""
    read_checkpoint(checkpoint)  # clear error for a missing / corrupt file
    with chatter_to(log), warnings.catch_warnings():  # fairchem's torch.load(weights_only=False) warns on every load
        warnings.filterwarnings("ignore", message=".*weights_only=False.*", category=FutureWarning)
        result = OCPCalculator(checkpoint_path=str(checkpoint), cpu=device == "cpu", seed=0)
    fit_identity_scale_factors(result.trainer._unwrapped_model)
    return result


def load_trainer(checkpoint: str | Path, device: str = "cpu"):
    """fairchem's trainer holding the checkpoint's model, normalizers and element references (from
    :func:`calculator`); its model builds each structure's graph on its own (:mod:`fairchem_prune.graphs`),
    so that a batch mixing molecules and slabs gives what one structure at a time gives, whatever the
    checkpoint's config says."""
    trainer = calculator(checkpoint, device).trainer
    build_graphs_per_structure(trainer.model)
    return trainer


def evaluate_checkpoint(
    checkpoint: str | Path,
    lmdb: str | Path,
    metrics: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    show_progress: bool | str = False,
) -> dict[str, float]:
    """Metrics (``{"energy_mae": ..., "forces_mae": ..., "energy_forces_within_threshold": ...}``, eV,
    eV/Å and a fraction; :data:`S2EF_METRICS` unless ``metrics``) of ``checkpoint`` on the
    fairchem LMDB file or folder ``lmdb``. Forces are scored on the free atoms only when the
    checkpoint's config says ``eval_on_free_atoms`` (as fairchem's validation does). ``show_progress``:
    a bar of the batches scored (:func:`fairchem_prune.console.progress`), named ``show_progress`` when
    it is a string."""
    return evaluate_on_datasets(checkpoint, {"data": lmdb}, metrics, batch_size, device, show_progress)["data"]


def evaluate_on_datasets(
    checkpoint: str | Path,
    datasets: dict[str, str | Path],
    metrics: dict[str, list[str]] | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    show_progress: bool | str = False,
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_checkpoint` on each of ``datasets`` (name -> LMDB), loading the model once."""
    for lmdb in datasets.values():
        lmdb_files(lmdb)
    metrics = metrics or S2EF_METRICS
    trainer = load_trainer(checkpoint, device)
    loaders = {name: DataLoader(open_lmdb_dataset(lmdb), batch_size=batch_size, shuffle=False,
                                collate_fn=lambda items: data_list_collater(items, otf_graph=True))
               for name, lmdb in datasets.items()}
    desc = show_progress if isinstance(show_progress, str) else f"scoring {Path(checkpoint).name}"
    with progress(total=sum(len(loader) for loader in loaders.values()), desc=desc, unit="batch",
                  disable=not show_progress) as bar:
        return {name: _evaluate(trainer, loader, metrics, bar) for name, loader in loaders.items()}


def _evaluate(trainer, loader: DataLoader, metrics: dict[str, list[str]], bar) -> dict[str, float]:
    free_atoms_only = trainer.config["outputs"].get("forces", {}).get("eval_on_free_atoms", False)
    evaluator = Evaluator(task="s2ef", eval_metrics=metrics)
    results: dict = {}
    for batch in loader:
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
        bar.update()
    return {name: float(value["metric"]) for name, value in results.items()}
