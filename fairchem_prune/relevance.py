"""Block relevance by GradCAM on the features that feed the output MLP (paper Sec. 3.2).

For a GemNet-OC with P = b + 1 feature partitions (embedding output f_1, then one per interaction
block), the FinalMLP of each branch reads f = concat(f_1, ..., f_P):

    energy branch (atoms): f_E (|V|, d_atom * P)      force branch (edges): f_F (|E|, d_edge * P)

With L0 the task loss of the checkpoint's own config (its loss functions, coefficients, normalizers
and element references, summed over the structures so that every structure counts once whatever the
batching), the relevance map is r = ReLU(f * dL0/df) (elementwise, same shape as f). It is split into
the P partitions, each averaged over rows (atoms or edges of all samples) and features:

    raw_p = sum(r_p) / numel(r_p),      score_p = raw_p / sum_q raw_q      (scores sum to 1)

``combined`` is the mean of the two branches' scores (energy only for models without a direct-force
branch). Other architectures plug in through :func:`block_taps`: they give, per branch, the tensors to
differentiate and how to split them into per-block features.

EquiformerV2 has no FinalMLP; its features are the outputs x_k of the b transformer blocks, each
(|V|, sum (lmax+1)^2, sphere_channels), named ``b_k`` for block k of the original model (0-based, as
in ``kept_blocks``). They form one node branch, reported as ``energy`` (``forces`` is null, so
``combined`` equals it), whose r = ReLU(x_k * dL0/dx_k) comes from the whole task loss (energy and
forces: both heads read the last block). Unlike GemNet-OC's partitions, which feed the FinalMLP
directly, x_k also feeds the later blocks, so dL0/dx_k includes every path through them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from fairchem_prune.errors import PruneError

BRANCHES = ("energy", "forces")


@dataclass
class BranchTap:
    """One branch's block features from the last forward pass.

    tensors: what autograd differentiates (GemNet-OC: the FinalMLP input f, one tensor).
    split: maps those tensors (or their gradients, same shapes) to the per-block features, a list of
        P tensors (rows, d_p).
    """

    tensors: list[torch.Tensor]
    split: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


@contextlib.contextmanager
def block_taps(model: nn.Module) -> Iterator[Callable[[], dict[str, BranchTap]]]:
    """Record the block features of ``model``'s forward passes; yields a function returning the
    :class:`BranchTap` of each branch (``energy``, ``forces`` where present) of the last pass:
    GemNet-OC's FinalMLP inputs, or EquiformerV2's b' block outputs (one ``energy`` branch)."""
    from fairchem_prune.features import capture_final_mlp_features, final_mlps
    from fairchem_prune.models.equiformer_v2_reduced import capture_block_outputs, is_equiformer_v2

    if is_equiformer_v2(model):
        with capture_block_outputs(model) as outputs:
            yield lambda: {"energy": BranchTap(list(outputs), list)}
        return
    try:
        final_mlps(model)
    except ValueError as err:
        raise PruneError(f"block relevance needs a GemNet-OC model with a FinalMLP or an EquiformerV2 model: {err}") from None

    with capture_final_mlp_features(model) as features:

        def taps() -> dict[str, BranchTap]:
            parts = features.num_partitions
            result = {"energy": BranchTap([features.node_input], lambda ts: list(ts[0].chunk(parts, dim=1)))}
            if features.edge_input is not None:
                result["forces"] = BranchTap([features.edge_input], lambda ts: list(ts[0].chunk(parts, dim=1)))
            return result

        yield taps


def block_names(model: nn.Module) -> list[str]:
    """GemNet-OC: ``f_1`` (embedding) and ``f_{k+2}`` for each block k of the original model (a
    reduced model keeps its original block numbers: kept blocks [0, 1, 3] give f_1, f_2, f_3, f_5).
    EquiformerV2: ``b_k`` for each block k of the original model (kept blocks [0, 1, 3]: b_0, b_1, b_3)."""
    from fairchem_prune.models.equiformer_v2_reduced import is_equiformer_v2

    core = getattr(model, "backbone", model)
    if is_equiformer_v2(model):
        return [f"b_{k}" for k in getattr(core, "source_blocks", range(len(core.blocks)))]
    blocks = getattr(core, "source_blocks", range(len(core.int_blocks)))
    return ["f_1"] + [f"f_{k + 2}" for k in blocks]


def gradcam_sums(tap: BranchTap, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sum of r = ReLU(f * dL/df) and number of its elements, each (P,)."""
    grads = torch.autograd.grad(loss, tap.tensors, retain_graph=True)
    relevance = [torch.relu(f * g) for f, g in zip(tap.split(tap.tensors), tap.split(grads))]
    sums = torch.stack([r.detach().double().sum() for r in relevance])
    counts = torch.tensor([r.numel() for r in relevance], dtype=torch.float64)
    return sums, counts


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
            for chunk in tqdm(batches, desc=desc, disable=not progress):
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


def normalise(raw: np.ndarray) -> list[float]:
    total = float(raw.sum())
    if total <= 0:
        raise PruneError("all block relevances are zero (the loss gradient vanishes on these samples)")
    return [float(x) / total for x in raw]


def scores_from_raw(raw: dict) -> dict:
    """JSON entry of one data set (without ``num_samples``) from :func:`relevance_of_samples`."""
    energy = normalise(raw["energy"])
    forces = normalise(raw["forces"]) if raw["forces"] is not None else None
    combined = energy if forces is None else [(e + f) / 2 for e, f in zip(energy, forces)]
    return {
        "energy": energy,
        "forces": forces if forces is not None else [None] * len(energy),
        "combined": combined,
        "raw": {b: (raw[b].tolist() if raw[b] is not None else [None] * len(energy)) for b in BRANCHES},
    }


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
    from fairchem.core.datasets import LmdbDataset

    from fairchem_prune.evaluation import load_trainer

    names = list(names) if names else [Path(d).stem if Path(d).is_file() else Path(d).name for d in datasets]
    if len(names) != len(datasets):
        raise PruneError(f"--names gives {len(names)} names for {len(datasets)} data sets")
    if len(set(names)) != len(names):
        raise PruneError(f"data set names {names} are not unique; give distinct --names")
    for path in datasets:
        if not Path(path).exists():
            raise PruneError(f"data {path}: no such LMDB file or folder")
    if num_samples < 1 or batch_size < 1:
        raise PruneError("--num-samples and --batch-size must be at least 1")
    trainer = load_trainer(checkpoint, device)
    result = {"blocks": block_names(trainer.model), "datasets": {}}
    for name, path in zip(names, datasets):
        try:
            dataset = LmdbDataset({"src": str(path)})
        except Exception as err:  # lmdb raises its own error types for corrupt files
            raise PruneError(f"data {path} cannot be read as a fairchem LMDB ({err})") from None
        order = np.random.default_rng(seed).permutation(len(dataset))[:num_samples]
        raw = relevance_of_samples(trainer, dataset, order.tolist(), batch_size, progress, desc=f"relevance {name}")
        result["datasets"][name] = {**scores_from_raw(raw), "num_samples": len(order)}
    return result


def plot_relevance(result: dict, path: str | Path, branch: str = "combined") -> None:
    """Grouped bar chart (paper Fig. 2): blocks on x, one bar per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks, datasets = result["blocks"], result["datasets"]
    width = 0.8 / max(len(datasets), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(blocks), 3.6))
    x = np.arange(len(blocks))
    for i, (name, entry) in enumerate(datasets.items()):
        scores = [s if s is not None else 0.0 for s in entry[branch]]
        ax.bar(x + (i - (len(datasets) - 1) / 2) * width, scores, width, label=f"{name} (n={entry['num_samples']})")
    ax.set_xticks(x, [f"${b.replace('_', '_{')}}}$" for b in blocks])
    ax.set_ylabel(f"relevance ({branch})")
    ax.set_title("GradCAM block relevance")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_relevance(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
