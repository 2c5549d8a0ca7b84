"""Block relevance by GradCAM on the per-block features (paper Sec. 3.2).

Which features are scored is the architecture's (its adapter's ``block_taps``): per branch (``energy``
over atoms, ``forces`` over edges where the model has such a branch), tensors f whose split gives one
feature f_p per scored entry p (a readout's input partitions, or each block's output). With L0 the
task loss of the checkpoint's own config (its loss functions, coefficients, normalizers and element
references, summed over the structures so that every structure counts once whatever the batching),
the relevance map is r = ReLU(f * dL0/df) (elementwise, same shape as f). Each f_p's part is averaged
over rows (atoms or edges of all samples) and features:

    raw_p = sum(r_p) / numel(r_p),      score_p = raw_p / sum_q raw_q      (scores sum to 1)

``combined`` is the mean of the branches' scores (the energy branch's where there is one branch,
``forces`` then null). A block's output also feeds the later blocks, so for block outputs dL0/df_p
includes every path through them; a readout's input partitions feed the readout directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fairchem_prune import architectures
from fairchem_prune.console import progress as bar_of
from fairchem_prune.errors import PruneError
from fairchem_prune.gradcam import (  # noqa: F401  (the host-independent part, re-exported)
    BRANCHES,
    BranchTap,
    gradcam_sums,
    normalise,
    plot_relevance,
    scores_from_raw,
    write_relevance,
)


def block_taps(model: nn.Module):
    """The adapter's :meth:`~fairchem_prune.architectures.base.Architecture.block_taps` of ``model``:
    a context yielding a function that returns each branch's :class:`BranchTap` of the last pass."""
    return architectures.of_model(model).block_taps(model)


def block_names(model: nn.Module) -> list[str]:
    """Names of the scored features of ``model``, numbered by the blocks of the original model (a
    reduced model keeps its original block numbers)."""
    architecture = architectures.of_model(model)
    core = architectures.core_of(model)
    return architecture.block_names(architecture.source_blocks(core))


def summed_task_loss(config: dict) -> list:
    """fairchem loss functions of a config's ``loss_functions`` (same targets, functions and
    coefficients) with sum reduction, in ``OCPTrainer.loss_functions`` form."""
    from fairchem.core.modules.loss import DDPLoss

    return [
        (target, {"fn": DDPLoss(spec["fn"], "sum"), "coefficient": spec["coefficient"]})
        for entry in config["loss_functions"]
        for target, spec in entry.items()
    ]


def relevance_of_samples(trainer, dataset, indices: Sequence[int], batch_size: int = 8,
                         progress: bool = False, desc: str = "relevance") -> dict:
    """Raw per-block relevance of ``dataset[i] for i in indices`` under ``trainer``'s model and loss.

    Returns ``{"energy": raw (P,), "forces": raw (P,) or None}`` as numpy arrays (unnormalised).
    """
    from fairchem.core.datasets import data_list_collater

    model = trainer.model
    model.eval()
    original = getattr(trainer, "loss_functions", None)
    trainer.loss_functions = summed_task_loss(trainer.config)
    totals: dict[str, list[torch.Tensor]] = {}
    try:
        with block_taps(model) as taps, torch.enable_grad():
            batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
            for chunk in bar_of(batches, desc=desc, unit="batch", disable=not progress):
                batch = data_list_collater([dataset[int(i)] for i in chunk], otf_graph=True).to(trainer.device)
                loss = trainer._compute_loss(trainer._forward(batch), batch)
                if not torch.isfinite(loss):
                    raise PruneError(f"the task loss is {loss.item()} on samples {list(chunk)[:5]}...; check the data labels")
                for branch, tap in taps().items():
                    sums, counts = gradcam_sums(tap, loss)
                    total = totals.setdefault(branch, [torch.zeros_like(sums), torch.zeros_like(counts)])
                    total[0] += sums
                    total[1] += counts
    finally:
        trainer.loss_functions = original
    return {branch: (totals[branch][0] / totals[branch][1]).numpy() if branch in totals else None for branch in BRANCHES}


def block_relevance(
    checkpoint: str | Path,
    datasets: Sequence[str | Path],
    names: Sequence[str] | None = None,
    num_samples: int = 1000,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """GradCAM block relevance of ``checkpoint`` on each LMDB in ``datasets``.

    ``num_samples`` structures are drawn per data set (a seeded random subset; all of them if the
    data set is smaller). Returns ``{"blocks": [...], "datasets": {name: {"energy", "forces",
    "combined", "raw": {"energy", "forces"}, "num_samples"}}}``.
    """
    from fairchem_prune.datasets.lmdb_io import lmdb_files, open_lmdb_dataset
    from fairchem_prune.evaluation import load_trainer

    names = list(names) if names else [Path(d).stem if Path(d).is_file() else Path(d).name for d in datasets]
    if len(names) != len(datasets):
        raise PruneError(f"--names gives {len(names)} names for {len(datasets)} data sets")
    if len(set(names)) != len(names):
        raise PruneError(f"data set names {names} are not unique; give distinct --names")
    for path in datasets:
        lmdb_files(path)
    if num_samples < 1 or batch_size < 1:
        raise PruneError("--num-samples and --batch-size must be at least 1")
    trainer = load_trainer(checkpoint, device)
    result = {"blocks": block_names(trainer.model), "datasets": {}}
    for name, path in zip(names, datasets):
        dataset = open_lmdb_dataset(path)
        order = np.random.default_rng(seed).permutation(len(dataset))[:num_samples]
        raw = relevance_of_samples(trainer, dataset, order.tolist(), batch_size, progress, desc=f"relevance {name}")
        result["datasets"][name] = {**scores_from_raw(raw), "num_samples": len(order)}
    return result
