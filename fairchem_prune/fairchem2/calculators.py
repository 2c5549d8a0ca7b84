"""ASE calculators of fairchem 2 inference checkpoints: fairchem's own ``FAIRChemCalculator`` over
``load_predict_unit``, for :mod:`fairchem_prune.md_check` (which takes calculator factories), with
fairchem's console chatter (its ``logging`` warnings at load and first prediction) sent to a log file
(:func:`fairchem_prune.console.chatter_to`).

Inference settings: ``batch`` (fairchem's ``InferenceSettings()`` defaults: experts not merged, no
compile; any system) or ``merged`` (``merge_mole=True``, no compile, no activation checkpointing:
faster on one fixed composition, task, charge and spin; fairchem reloads the unmerged model, with a
warning, when they change).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fairchem_prune.errors import PruneError

SETTINGS = ("batch", "merged")


def inference_settings(name: str):
    """fairchem's ``InferenceSettings`` for ``batch`` or ``merged`` (see the module docstring)."""
    from fairchem.core.units.mlip_unit.api.inference import InferenceSettings

    if name == "batch":
        return InferenceSettings()
    if name == "merged":
        return InferenceSettings(merge_mole=True, compile=False, activation_checkpointing=False)
    raise PruneError(f"--inference-settings {name!r}: choose one of {', '.join(SETTINGS)}")


def forces_kind(checkpoint) -> str:
    """``"direct"`` for a direct-force model, else ``"gradient"`` (forces = -dE/dx)."""
    backbone = checkpoint.model_config.get("backbone", {})
    return "direct" if backbone.get("direct_forces", False) else "gradient"


def checkpoint_calculators(checkpoints: dict[str, Path], task: str, settings: str = "batch",
                           device: str = "cpu") -> tuple[dict[str, Callable], dict[str, str]]:
    """(name -> a factory of the checkpoint's ``FAIRChemCalculator`` for ``task``, name -> "gradient" or
    "direct" forces). Every checkpoint is read and checked first, and ``task`` checked against its
    datasets: a PruneError names the first problem."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint, resolve_path
    from fairchem_prune.fairchem2.relevance import dataset_names

    inference_settings(settings)
    factories, kinds = {}, {}
    for name, given in checkpoints.items():
        path = resolve_path(given)  # a file, or a model name in fairchem's cache
        checkpoint = read_inference_checkpoint(path)
        known = dataset_names(checkpoint)
        if task not in known:
            raise PruneError(f"task {task!r} is not one of the tasks of {name} ({path}): {', '.join(known)}")
        kinds[name] = forces_kind(checkpoint)
        factories[name] = lambda path=path: calculator(path, task, settings, device)
    return factories, kinds


def calculator(path: str | Path, task: str, settings: str = "batch", device: str = "cpu"):
    """``FAIRChemCalculator(load_predict_unit(path, ...), task_name=task)``."""
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    unit = load_predict_unit(str(path), inference_settings=inference_settings(settings), device=device)
    return FAIRChemCalculator(unit, task_name=task)

