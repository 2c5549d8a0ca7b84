"""The demo's downstream side: fine-tune models on the ethanol task with the stock ``fairchem`` trainer
(the architecture's ``demo_finetune_config``, e.g. ``configs/finetune/demo_ethanol_base.yml``), every
run for the same number of epochs, several seeds per model, then score each best checkpoint on the test
split and read its validation curve (force MAE against wall time) from fairchem's tensorboard events.

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
    seed: int
    run: FairchemRun


def has_random_mlp(record: dict) -> bool:
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
        if has_random_mlp(record):
            core["mlp_init"] = "random" if init == "BR/RandomMLP" else "sliced"
    return by_name(record["architecture"]).with_core({"name": base.get("name")}, core)


def finetune_plan(teacher_blocks: int, counts: list[int], focus: int, seeds: int, sweep: bool,
                  random_mlp: bool) -> list[tuple[str, int, int]]:
    """``(init, blocks, seed)`` of every run, largest models first: the default models (BR at the
    teacher's size and at ``focus`` blocks, BR+KD and scratch at ``focus``), each with ``seeds`` seeds;
    with ``sweep`` also BR, BR+KD and BR/RandomMLP (where ``random_mlp``) at every one of ``counts``,
    seed 0."""
    models = [("BR", teacher_blocks), ("BR", focus), ("BR+KD", focus), ("scratch", focus)]
    plan = [(init, k, seed) for init, k in models for seed in range(seeds)]
    if sweep:
        inits = ("BR", "BR+KD") + (("BR/RandomMLP",) if random_mlp else ())
        plan += [(init, k, 0) for init in inits for k in counts if (init, k) not in models]
    return sorted(plan, key=lambda item: (-item[1], INITS.index(item[0]), item[2]))


def run_name(init: str, k: int, seed: int = 0) -> str:
    """``br_4b``, ``br_kd_4b``, ``br_randommlp_4b``, ``scratch_4b``; ``_s<seed>`` after it for seeds > 0."""
    return f"{init.lower().replace('/', '_').replace('+', '_')}_{k}b" + (f"_s{seed}" if seed else "")


def finetune_runs(teacher: Path, record: dict, plan: list[tuple[str, int, int]], kd: dict[int, Path], ethanol: Path,
                  settings, folder: Path, logs: Path) -> list[FinetuneRun]:
    """The runs of ``plan`` (:func:`finetune_plan`), ``settings.ft_epochs`` epochs each, seeded by
    fairchem's ``--seed`` (the data order; a fresh layer's initialisation)."""
    folder.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(settings.ethanol_sizes[0] / settings.batch_size)
    optim = {"batch_size": settings.batch_size, "max_epochs": settings.ft_epochs, "cosine_epochs": settings.ft_epochs,
             "ema_decay": settings.ft_ema, "eval_every": steps_per_epoch, "print_every": steps_per_epoch}
    multipliers = yaml.safe_load((config_path("finetune/recipe.yml")).read_text())["optim"]["layerwise_lr"]
    if record["blocks"] > len(multipliers["blocks"]):  # JMP-L's 6 multipliers, the last one repeated
        optim["layerwise_lr"] = extend_multipliers(multipliers, record["blocks"])
    base = config_path(by_name(record["architecture"]).demo_finetune_config)
    base_model = load_config(str(base))[0]["model"]
    runs = []
    for init, k, seed in plan:
        name = run_name(init, k, seed)
        config = folder / f"{run_name(init, k)}.yml"  # the seeds of a model share its config
        if not config.exists():
            config.write_text(yaml.safe_dump({
                "includes": [str(base)],
                "dataset": {split: {"src": str((ethanol / split).resolve())} for split in ("train", "val")},
                "model": _model_section(init, k, teacher, record, kd, base_model),
                "optim": optim,
            }, sort_keys=False))
        runs.append(FinetuneRun(init, k, seed, FairchemRun(name, config, folder / "runs", logs / f"{name}.log",
                                                           args=("--seed", str(seed)))))
    return runs


def score_runs(runs: list[FinetuneRun], ethanol: Path, device: str) -> list[dict]:
    """Test metrics (best validation checkpoint), validation curve and training time of each run."""
    from fairchem_prune.evaluation import evaluate_checkpoint

    rows = []
    for i, item in enumerate(runs, 1):
        curve, seconds = item.run.validation_curve()
        rows.append({
            "name": item.run.name, "init": item.init, "blocks": item.blocks, "seed": item.seed,
            "test": evaluate_checkpoint(item.run.best_checkpoint, ethanol / "test", device=device,
                                        show_progress=f"finetune: test scoring {item.run.name} ({i}/{len(runs)})"),
            "best_val_forces_mae": min(value for _, _, value in curve),
            "train_seconds": seconds, "curve": curve,
        })
    return rows
