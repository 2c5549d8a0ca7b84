"""GradCAM block relevance of a fairchem 2 inference checkpoint (UMA, eSEN) for one task (dataset).

The loss is the checkpoint's own: its ``tasks_config`` instantiated with hydra, the tasks of the chosen
dataset kept (e.g. ``omol_energy`` and ``omol_forces``), the predictions of the model on batches made
as fairchem 2 makes them (``AtomicData.from_ase`` with the task's name and charge / spin, the labels
under the task names as the data sets' ``key_mapping`` puts them, ``atomicdata_list_to_batch``) and
fairchem's own ``compute_loss``, which applies each task's element references and normalizer to the
targets as ``MLIPTrainEvalUnit.train_step`` does (the model predicts normalised, referenced values).
Each task's ``DDPMTLoss`` is summed instead of averaged (its division by the number of samples left
out), so every structure counts once whatever the batching.

The model is in eval mode (no dropout: the scores are deterministic), its heads in training mode so
that the forces and stress they derive from the energy by autograd stay differentiable, as in
training. Features: the output of every block (``backbone.blocks[i]``, ``(N_atoms, (lmax+1)^2, C)``),
one ``energy`` branch (the heads read the final node embedding only); the arithmetic is shared
(:mod:`fairchem_prune.gradcam`).
"""

from __future__ import annotations

import contextlib
import copy
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2 import escn_md
from fairchem_prune.fairchem2.checkpoints import (
    has_ema,
    hydra_model,
    load_model,
    read_inference_checkpoint,
    source_blocks,
)
from fairchem_prune.gradcam import BranchTap, gradcam_sums, scores_from_raw


def dataset_names(checkpoint) -> list[str]:
    """The datasets (tasks of ``FAIRChemCalculator``) of a checkpoint's ``tasks_config``, in order."""
    names = []
    for task in checkpoint.tasks_config:
        for name in task.get("datasets", []):
            if name not in names:
                names.append(name)
    return names


def _summed(loss_fn):
    """A copy of a ``DDPMTLoss`` that sums where it would average: its ``_ddp_mean`` (the division by
    the number of samples across ranks) is the identity, for each reduction (mean, per_structure)."""
    from fairchem.core.modules.loss import DDPMTLoss

    if not isinstance(loss_fn, DDPMTLoss):
        raise PruneError(f"the task loss is a {type(loss_fn).__name__}; relevance sums fairchem's DDPMTLoss")
    loss_fn = copy.copy(loss_fn)
    loss_fn._ddp_mean = types.MethodType(lambda self, num_samples, loss: loss, loss_fn)
    loss_fn.reduction_map = {"mean": loss_fn.mean, "sum": loss_fn.sum, "per_structure": loss_fn.per_structure}
    return loss_fn


def task_losses(checkpoint, task: str, summed: bool = True) -> list:
    """The checkpoint's trained tasks (fairchem ``Task``) of dataset ``task``, instantiated with hydra;
    with ``summed`` their losses summed over the samples. An unknown task is a PruneError listing the
    model's."""
    import hydra

    from fairchem.core.units.mlip_unit.mlip_unit import filter_inference_only_tasks

    known = dataset_names(checkpoint)
    if task not in known:
        raise PruneError(f"task {task!r} is not one of the model's tasks: {', '.join(known)}")
    tasks = [hydra.utils.instantiate(t) for t in checkpoint.tasks_config if task in t.get("datasets", [])]
    tasks = filter_inference_only_tasks(tasks)
    for t in tasks:
        if summed:
            t.loss_fn = _summed(t.loss_fn)
    return tasks


def atomic_data(atoms, task: str, tasks: Sequence) -> object:
    """One structure as fairchem 2's training data: ``AtomicData.from_ase`` (charge and spin from
    ``atoms.info``), labels under the task names (:func:`~fairchem_prune.fairchem2.data.put_task_labels`;
    a missing one inf, which ``compute_loss`` masks out) and ``dataset_name``."""
    from fairchem.core.datasets.atomic_data import AtomicData

    from fairchem_prune.fairchem2.data import put_task_labels

    data = AtomicData.from_ase(atoms, task_name=task, r_data_keys=["spin", "charge"])
    put_task_labels(data, tasks)
    data.dataset_name = task
    return data


def make_batch(structures, task: str, tasks: Sequence, device: str = "cpu"):
    from fairchem.core.datasets.atomic_data import atomicdata_list_to_batch

    return atomicdata_list_to_batch([atomic_data(a, task, tasks) for a in structures]).to(device)


def task_loss(model, tasks: Sequence, batch) -> torch.Tensor:
    """fairchem's ``compute_loss`` of ``model``'s predictions on ``batch``, summed over the tasks (what
    ``train_step`` backpropagates)."""
    from fairchem.core.units.mlip_unit.mlip_unit import compute_loss

    return sum(compute_loss(tasks, model(batch), batch).values())


@contextlib.contextmanager
def block_taps(model) -> Iterator:
    """A context yielding a function that returns the ``energy`` :class:`BranchTap` of the last pass:
    the outputs of the blocks, captured by forward hooks."""
    outputs: list[torch.Tensor] = []
    blocks = escn_md.blocks(model)

    def hook(module, args, output):
        if len(outputs) == len(blocks):  # a new forward pass
            outputs.clear()
        outputs.append(output)

    handles = [block.register_forward_hook(hook) for block in blocks]
    try:
        yield lambda: {"energy": BranchTap(list(outputs), list)}
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def differentiable_heads(model) -> Iterator:
    """The model in eval mode with its heads in training mode (forces and stress by autograd with
    ``create_graph``), restored afterwards."""
    heads = hydra_model(model).output_heads
    model.eval()
    heads.train()
    try:
        yield model
    finally:
        model.eval()


def relevance_of_structures(model, tasks: Sequence, structures: Sequence, task: str, batch_size: int = 8,
                            device: str = "cpu", progress: bool = False, desc: str = "relevance") -> dict:
    """Raw per-block relevance ``{"energy": (P,), "forces": None}`` (numpy, unnormalised) of ``model``
    under ``tasks``' summed loss on ``structures``."""
    sums = counts = None
    batches = [structures[i:i + batch_size] for i in range(0, len(structures), batch_size)]
    with differentiable_heads(model), block_taps(model) as taps, torch.enable_grad():
        for start, chunk in zip(range(0, len(structures), batch_size),
                                tqdm(batches, desc=desc, disable=not progress)):
            batch = make_batch(chunk, task, tasks, device)
            loss = task_loss(model, tasks, batch)
            if not torch.isfinite(loss):
                raise PruneError(f"the task loss is {loss.item()} on structures {start}..{start + len(chunk) - 1}; "
                                 "check their labels")
            s, c = gradcam_sums(taps()["energy"], loss)
            sums, counts = (s, c) if sums is None else (sums + s, counts + c)
    return {"energy": (sums / counts).numpy(), "forces": None}


def block_names(checkpoint) -> list[str]:
    b = escn_md.num_blocks(checkpoint.model_config, "checkpoint")
    return [f"b_{k}" for k in source_blocks(checkpoint, b)]


def block_relevance(checkpoint: str | Path, data: Sequence[str | Path], task: str, names: Sequence[str] | None = None,
                    num_samples: int = 1000, batch_size: int = 8, seed: int = 0, device: str = "cpu",
                    use_ema: bool = True, progress: bool = True) -> dict:
    """GradCAM block relevance of ``checkpoint`` for ``task`` on each structure file in ``data``:
    ``num_samples`` structures drawn per file (a seeded random subset; all of them when it holds
    fewer). Returns the 1.x tool's layout, ``{"blocks", "datasets": {name: {"energy", "forces",
    "combined", "raw", "num_samples"}}}`` plus ``"task"`` and ``"weights"``."""
    from fairchem_prune.fairchem2.data import read_structures

    path = Path(checkpoint)
    names = list(names) if names else [Path(d).stem if Path(d).is_file() else Path(d).name for d in data]
    if len(names) != len(data):
        raise PruneError(f"--names gives {len(names)} names for {len(data)} data sets")
    if len(set(names)) != len(names):
        raise PruneError(f"data set names {names} are not unique; give distinct --names")
    if num_samples < 1 or batch_size < 1:
        raise PruneError("--num-samples and --batch-size must be at least 1")
    original = read_inference_checkpoint(path)
    if use_ema and not has_ema(original):
        raise PruneError(f"checkpoint {path} has no EMA weights (ema_state_dict is empty); score its raw weights with --raw")
    escn_md.backbone_config(original.model_config, f"checkpoint {path}")
    tasks = task_losses(original, task)
    need = tuple(dict.fromkeys(t.property for t in tasks if t.property != "stress"))
    structures = {name: read_structures(d, num_samples, task=task, need_labels=need, seed=seed)
                  for name, d in zip(names, data)}
    model = load_model(original, path, use_ema=use_ema).to(device)
    result = {"blocks": block_names(original), "task": task, "weights": "EMA" if use_ema else "raw", "datasets": {}}
    for name, frames in structures.items():
        raw = relevance_of_structures(model, tasks, frames, task, batch_size, device, progress, desc=f"relevance {name}")
        result["datasets"][name] = {**scores_from_raw(raw), "num_samples": len(frames)}
    return result
