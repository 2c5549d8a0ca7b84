"""The demo's pre-training side: block relevance of the teacher, block reduction (BR) to fewer blocks,
knowledge distillation (BR+KD) of each reduced student on the demo mix, and the force / energy error
of every model on the validation split of each pre-training source (the paper's Table 1)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from fairchem.core.common.utils import load_config

from fairchem_prune.architectures import by_name
from fairchem_prune.fairchem_runs import FairchemRun, train_all
from fairchem_prune.resources import config_path



def relevance(teacher: Path, data, num_samples: int, device: str) -> dict:
    """GradCAM block relevance of ``teacher`` on each pre-training source's validation split."""
    from fairchem_prune.relevance import block_relevance

    sources = data.val_sources()
    return block_relevance(teacher, list(sources.values()), names=list(sources), num_samples=num_samples,
                           device=device)


def reduced_counts(blocks: int, steps: int) -> list[int]:
    """Block counts of the reduced models: b-1 down to b-``steps`` (at least 1)."""
    return [k for k in range(blocks - 1, blocks - steps - 1, -1) if k >= 1]


def slice_models(teacher: Path, counts: list[int], folder: Path) -> dict[int, Path]:
    """BR: ``folder/br_<k>b.pt``, the teacher's first k blocks with the sliced FinalMLP."""
    from fairchem_prune.slicing import slice_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k in counts:
        paths[k] = folder / f"br_{k}b.pt"
        if not paths[k].exists():
            slice_checkpoint(teacher, paths[k], num_blocks_kept=k, force=True)
    return paths


def distillation_runs(teacher: Path, architecture: str, counts: list[int], data, settings, folder: Path,
                      logs: Path) -> dict[int, FairchemRun]:
    """One ``trainer: distill`` run per block count: ``settings.kd_samples`` structures of the mix,
    one validation pass at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    adapter = by_name(architecture)
    form = {"name": load_config(str(config_path(adapter.distill_config)))[0]["model"].get("name")}
    steps = math.ceil(settings.kd_samples / settings.batch_size)
    runs = {}
    for k in counts:
        config = folder / f"kd_{k}b.yml"
        config.write_text(yaml.safe_dump({
            "includes": [str(config_path(adapter.distill_config))],
            "dataset": {"train": {"src": str(data.train.resolve())}, "val": {"src": str(data.val.resolve())}},
            "task": {"distill": {"teacher_checkpoint": str(teacher.resolve()), "max_samples": settings.kd_samples}},
            "model": adapter.with_core(form, {"num_blocks_kept": k}),
            "optim": {"batch_size": settings.batch_size, "T_max": steps, "eval_every": steps,
                      "print_every": max(1, steps // 10)},
        }, sort_keys=False))
        runs[k] = FairchemRun(f"kd_{k}b", config, folder / "runs", logs / f"kd_{k}b.log")
    return runs


def distill(runs: dict[int, FairchemRun], fairchem_args: list[str], workers: int, folder: Path, say) -> dict[int, Path]:
    """Train the runs and export each student's best checkpoint to ``folder/kd_<k>b.pt``."""
    from fairchem_prune.slicing import slice_checkpoint

    train_all(list(runs.values()), fairchem_args, workers, say=lambda m: say(f"distill: {m}"))
    paths = {}
    for k, run in runs.items():
        paths[k] = folder / f"kd_{k}b.pt"
        if not paths[k].exists():
            slice_checkpoint(run.best_checkpoint, paths[k], num_blocks_kept=k, force=True)
    return paths


def evaluate_models(models: dict[str, Path], data, device: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {source: {"energy_mae", "forces_mae", "forces_cosine_similarity"}}}`` (eV, eV/Å) on
    each source's validation split."""
    from fairchem_prune.evaluation import evaluate_on_datasets

    return {name: evaluate_on_datasets(path, data.val_sources(), device=device) for name, path in models.items()}
