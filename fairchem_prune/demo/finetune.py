"""The demo's downstream side: fine-tune models of every block count on the ethanol task with the stock
``fairchem`` trainer (the architecture's ``demo_finetune_config``, e.g.
``configs/finetune/demo_ethanol_base.yml``), every run for the same number of epochs, then score each best checkpoint on the test split and read its validation curve (force MAE
against wall time) from fairchem's tensorboard events.

Starting points for k blocks: BR (the teacher's first k blocks, sliced FinalMLP), BR/RandomMLP (the
same with a fresh first readout layer, where the architecture has one to re-initialise), BR+KD (the distilled student) and scratch (the
same architecture, freshly initialised).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from fairchem.core.common.utils import load_config

from fairchem_prune.architectures import by_name
from fairchem_prune.fairchem_runs import FairchemRun
from fairchem_prune.resources import config_path
from fairchem_prune.trainers.finetune import extend_multipliers

INITS = ("BR", "BR/RandomMLP", "BR+KD", "scratch")


@dataclass(frozen=True)
class FinetuneRun:
    init: str      #: one of INITS
    blocks: int
    run: FairchemRun


def _has_random_mlp(record: dict) -> bool:
    """Whether the teacher's architecture has a first readout layer to re-initialise (BR/RandomMLP)."""
    return "random" in by_name(record["architecture"]).mlp_init_choices


def _model_section(init: str, k: int, teacher: Path, record: dict, kd: dict[int, Path], base: dict) -> dict:
    """The run's ``model:`` overrides of the fine-tuning config ``base`` (its merged ``model:``): the
    reduced model (hydra teacher: a hydra model with the reduced backbone, heads from ``base``) keeping
    k blocks from the teacher (BR, BR/RandomMLP) or the distilled student (BR+KD), or built fresh with
    the teacher's architecture (scratch; ``base``'s task settings, e.g. ``use_pbc``, win)."""
    from fairchem_prune.architectures import core_section
    from fairchem_prune.demo.teacher import teacher_core

    if init == "BR+KD":
        core = {"pretrained_checkpoint": str(kd[k].resolve()), "num_blocks_kept": k}
    elif init == "scratch":
        task = core_section(base)
        core = {**{key: v for key, v in teacher_core(teacher).items() if key not in task},
                "pretrained_checkpoint": None, "num_blocks_kept": k}
    else:
        core = {"pretrained_checkpoint": str(teacher.resolve()), "num_blocks_kept": k}
        if _has_random_mlp(record):
            core["mlp_init"] = "random" if init == "BR/RandomMLP" else "sliced"
    return by_name(record["architecture"]).with_core({"name": base.get("name")}, core)


def finetune_runs(teacher: Path, record: dict, counts: list[int], kd: dict[int, Path], scratch: list[int],
                  ethanol: Path, settings, folder: Path, logs: Path) -> list[FinetuneRun]:
    """The runs, largest models first: BR at the teacher's size and each of ``counts``, BR/RandomMLP
    and BR+KD at ``counts``, scratch at ``scratch``; ``settings.ft_epochs`` epochs each."""
    plan = [("BR", record["blocks"])] + [("BR", k) for k in counts] + [("BR+KD", k) for k in counts]
    if _has_random_mlp(record):
        plan += [("BR/RandomMLP", k) for k in counts]
    plan += [("scratch", k) for k in scratch]
    folder.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(settings.ethanol_sizes[0] / settings.batch_size)
    optim = {"batch_size": settings.batch_size, "max_epochs": settings.ft_epochs, "cosine_epochs": settings.ft_epochs,
             "eval_every": max(1, steps_per_epoch // 2), "print_every": steps_per_epoch}
    multipliers = yaml.safe_load((config_path("finetune/recipe.yml")).read_text())["optim"]["layerwise_lr"]
    if record["blocks"] > len(multipliers["blocks"]):  # JMP-L's 6 multipliers, the last one repeated
        optim["layerwise_lr"] = extend_multipliers(multipliers, record["blocks"])
    base = config_path(by_name(record["architecture"]).demo_finetune_config)
    base_model = load_config(str(base))[0]["model"]
    runs = []
    for init, k in sorted(plan, key=lambda item: -item[1]):
        name = f"{init.lower().replace('/', '_').replace('+', '_')}_{k}b"
        config = folder / f"{name}.yml"
        if not config.exists():
            config.write_text(yaml.safe_dump({
                "includes": [str(base)],
                "dataset": {split: {"src": str((ethanol / split).resolve())} for split in ("train", "val")},
                "model": _model_section(init, k, teacher, record, kd, base_model),
                "optim": optim,
            }, sort_keys=False))
        runs.append(FinetuneRun(init, k, FairchemRun(name, config, folder / "runs", logs / f"{name}.log")))
    return runs


def score_runs(runs: list[FinetuneRun], ethanol: Path, device: str) -> list[dict]:
    """Test metrics (best validation checkpoint), validation curve and training time of each run."""
    from fairchem_prune.evaluation import evaluate_checkpoint

    rows = []
    for i, item in enumerate(runs, 1):
        curve, seconds = item.run.validation_curve()
        rows.append({
            "name": item.run.name, "init": item.init, "blocks": item.blocks,
            "test": evaluate_checkpoint(item.run.best_checkpoint, ethanol / "test", device=device,
                                        show_progress=f"finetune: test scoring {item.run.name} ({i}/{len(runs)})"),
            "best_val_forces_mae": min(value for _, _, value in curve),
            "train_seconds": seconds, "curve": curve,
        })
    return rows
