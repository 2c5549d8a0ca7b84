"""The fine-tuning configs of ``fairchem-prune compress``: the architecture's recipe
(:attr:`~fairchem_prune.architectures.base.Architecture.finetune_recipe`) merged with the user's task
config(s) and the run's own settings, written self-contained (no ``includes``) so that a run reads
the same config locally and on a Slurm node.

The task gives the data (``dataset``, whose ``train`` / ``val`` paths the command replaces; ``test``
is dropped so that fairchem does not predict it at every validation), the targets (``outputs``,
``loss_functions``, ``evaluation_metrics``) and may set model keys (graph, forces); with a hydra
recipe, the task's model keys go to the backbone. Later task files override earlier ones, and the
task overrides the recipe.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from fairchem_prune.architectures import Architecture, core_section
from fairchem_prune.errors import PruneError
from fairchem_prune.resources import config_path

#: sections a task config must give
TASK_SECTIONS = ("outputs", "loss_functions", "evaluation_metrics")
#: the S2EF leaderboard's ranking metric (fairchem's Evaluator): the share of structures with energy within
#: 0.02 eV and every force within 0.03 eV/Å; validated beside the task's own metrics where it applies
LEADERBOARD_METRIC = "energy_forces_within_threshold"


def _load(path: Path, what: str) -> dict:
    from fairchem.core.common.utils import load_config

    if not path.is_file():
        raise PruneError(f"{what} {path}: no such file")
    try:
        config, _, conflicts = load_config(str(path))
    except Exception as err:  # yaml / include errors
        raise PruneError(f"{what} {path} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if conflicts:
        raise PruneError(f"{what} {path} includes files that set the same keys: {conflicts}")
    return config


def _merge(base: dict, update: dict) -> dict:
    from fairchem.core.common.utils import merge_dicts

    return merge_dicts(base, update)[0]


def _add_leaderboard_metric(config: dict) -> None:
    """Validate :data:`LEADERBOARD_METRIC` too when the task scores energy and forces, the forces on the
    free atoms (as the leaderboard does; fairchem counts only free atoms per structure for it)."""
    metrics = config["evaluation_metrics"].get("metrics") or {}
    forces = config["outputs"].get("forces") or {}
    if "energy" in metrics and "forces" in metrics and forces.get("eval_on_free_atoms") \
            and LEADERBOARD_METRIC not in metrics["forces"]:
        metrics["forces"] = [*metrics["forces"], LEADERBOARD_METRIC]


def finetune_base(architecture: Architecture, hydra: bool, tasks: list[Path], train: Path, val: Path) -> dict:
    """The recipe of ``architecture`` with the ``tasks`` merged in and the data at ``train`` / ``val``:
    every setting of a candidate's run but its model's checkpoint, blocks and schedule."""
    recipe = _load(config_path(architecture.finetune_recipe), "recipe")
    if (recipe["model"].get("name") == "hydra") != hydra:
        kind = "a hydra" if hydra else "a monolithic"
        raise PruneError(f"the {architecture.label} recipe {architecture.finetune_recipe} does not build {kind} model "
                         "like the checkpoint's; give a checkpoint of the other form")
    task: dict = {}
    for path in tasks:
        task = _merge(task, _load(path, "task config"))
    missing = [section for section in TASK_SECTIONS if section not in task]
    if missing:
        raise PruneError(f"task config {' + '.join(map(str, tasks))} has no {', '.join(missing)}: add a file with the "
                         "targets (e.g. --task configs/finetune/tasks/md.yml TASK.yml) or give a complete task")
    model = task.pop("model", {}) or {}
    own = core_section(recipe["model"])
    wanted = {architecture.reduced_backbone if hydra else architecture.reduced_model}
    found = model.get("backbone", {}).get("model") if model.get("name") == "hydra" else model.get("name")
    if found is not None and found not in wanted | {own.get("model", own.get("name"))}:
        raise PruneError(f"task config {tasks[-1]} trains {found!r} but the {architecture.label} checkpoint needs "
                         f"{sorted(wanted)[0]}; remove its model name or give a task of that model")
    if hydra and model.get("name") != "hydra":  # the task's model keys describe the backbone
        model = {"backbone": {k: v for k, v in model.items() if k != "name"}}
    config = _merge(recipe, {**task, "model": model})
    dataset = config.get("dataset", {})
    if not isinstance(dataset.get("train"), dict):
        raise PruneError(f"task config {tasks[-1]} has no dataset.train section (its format and transforms)")
    _add_leaderboard_metric(config)
    dataset.pop("test", None)
    dataset["train"]["src"] = str(train.resolve())
    dataset["val"] = {**dataset.get("val", {"format": dataset["train"].get("format", "lmdb")}), "src": str(val.resolve())}
    return config


def run_config(base: dict, architecture: Architecture, core: dict, epochs: int | None, steps_per_epoch: int) -> dict:
    """``base`` with the model's block-holding section updated by ``core`` (checkpoint, kept blocks) and
    the recipe's schedule scaled to ``epochs`` (warm-up and cosine decay keep their share of it), or,
    for ``epochs`` None, the recipe's own schedule stopped on a validation plateau (``optim.plateau``,
    :mod:`~fairchem_prune.trainers.plateau`; the recipe's ``max_epochs`` the cap); validated twice per
    epoch of ``steps_per_epoch`` steps."""
    from dataclasses import asdict

    from fairchem_prune.trainers.finetune import extend_multipliers
    from fairchem_prune.trainers.plateau import Plateau

    config = copy.deepcopy(base)
    section = {**core_section(config["model"]), **core}
    config["model"] = architecture.with_core(config["model"], section)
    optim = config.setdefault("optim", {})
    if epochs is None:
        optim.setdefault("plateau", asdict(Plateau()))
    else:
        cosine = float(optim.get("cosine_epochs", epochs))
        if optim.get("scheduler") == "WarmupCosine" and cosine > 0:
            optim["warmup_epochs"] = float(optim.get("warmup_epochs", 0)) * epochs / cosine
            optim["cosine_epochs"] = epochs
        optim["max_epochs"] = epochs
        optim.pop("plateau", None)
    optim["eval_every"] = max(1, steps_per_epoch // 2)  # two validations per epoch: the best checkpoint
    optim.setdefault("print_every", max(1, steps_per_epoch // 2))
    if "layerwise_lr" in optim:
        optim["layerwise_lr"] = extend_multipliers(optim["layerwise_lr"], len(core.get("kept_blocks") or []))
    return config


def write_config(config: dict, path: Path, header: str, started: bool = False) -> None:
    """``config`` as YAML at ``path`` with a comment ``header``. An existing file of another config is
    replaced while its run has not ``started`` (e.g. after a fix to the task file), else refused."""
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(config, sort_keys=False)
    if path.exists() and path.read_text() == text:
        return
    if path.exists() and started:
        raise PruneError(f"{path} holds the config its run was started with, and the task files (or an update of "
                         "fairchem-prune) now give another; restore them or use another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
