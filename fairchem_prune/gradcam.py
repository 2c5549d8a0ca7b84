"""GradCAM block relevance, the host-independent part (paper Sec. 3.2): the arithmetic on tapped
features and their gradients, the scores, the JSON / PNG outputs and the printed table.

Each host supplies the features and the loss (:mod:`fairchem_prune.relevance` beside fairchem 1.x,
:mod:`fairchem_prune.fairchem2.relevance` beside 2.x): per branch (``energy``; ``forces`` where a model
has a separate force readout) a :class:`BranchTap` whose split gives one feature f_p per scored entry
p. With L0 the task loss summed over the structures, r = ReLU(f * dL0/df) (elementwise) and

    raw_p = sum(r_p) / numel(r_p),      score_p = raw_p / sum_q raw_q      (scores sum to 1)

This module imports torch, numpy and matplotlib only, never fairchem.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fairchem_prune.errors import PruneError

BRANCHES = ("energy", "forces")


@dataclass
class BranchTap:
    """One branch's block features from the last forward pass (block relevance).

    tensors: what autograd differentiates (e.g. GemNet-OC's FinalMLP input f, one tensor; or each
        block's output).
    split: maps those tensors (or their gradients, same shapes) to the per-block features, a list of
        P tensors (rows, ...), one per scored block.
    """

    tensors: list[torch.Tensor]
    split: Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def gradcam_sums(tap: BranchTap, loss: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block sum of r = ReLU(f * dL/df) and number of its elements, each (P,)."""
    grads = torch.autograd.grad(loss, tap.tensors, retain_graph=True)
    relevance = [torch.relu(f * g) for f, g in zip(tap.split(tap.tensors), tap.split(grads))]
    sums = torch.stack([r.detach().double().sum() for r in relevance])
    counts = torch.tensor([r.numel() for r in relevance], dtype=torch.float64)
    return sums, counts


def normalise(raw: np.ndarray) -> list[float]:
    total = float(raw.sum())
    if total <= 0:
        raise PruneError("all block relevances are zero (the loss gradient vanishes on these samples)")
    return [float(x) / total for x in raw]


def scores_from_raw(raw: dict) -> dict:
    """JSON entry of one data set (without ``num_samples``) from ``{"energy": raw (P,), "forces": raw
    (P,) or None}`` (numpy arrays, unnormalised)."""
    energy = normalise(raw["energy"])
    forces = normalise(raw["forces"]) if raw["forces"] is not None else None
    combined = energy if forces is None else [(e + f) / 2 for e, f in zip(energy, forces)]
    return {
        "energy": energy,
        "forces": forces if forces is not None else [None] * len(energy),
        "combined": combined,
        "raw": {b: (raw[b].tolist() if raw[b] is not None else [None] * len(energy)) for b in BRANCHES},
    }


def plot_relevance(result: dict, path: str | Path, branch: str = "combined") -> None:
    """Grouped bar chart (paper Fig. 2): blocks on x, one bar per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks, datasets = result["blocks"], result["datasets"]
    width = 0.8 / max(len(datasets), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(blocks), 3.6))
    x = np.arange(len(blocks))
    top = 0.0
    for i, (name, entry) in enumerate(datasets.items()):
        scores = [s if s is not None else 0.0 for s in entry[branch]]
        top = max(top, *scores)
        ax.bar(x + (i - (len(datasets) - 1) / 2) * width, scores, width, label=f"{name} (n={entry['num_samples']})")
    ax.set_xticks(x, [f"${b.replace('_', '_{')}}}$" for b in blocks])
    ax.set_ylabel(f"relevance ({branch})")
    ax.set_title("GradCAM block relevance")
    ax.set_ylim(0, 1.3 * top if top > 0 else 1)  # headroom for the legend above the bars
    ax.legend(fontsize=8, loc="upper right", ncol=min(2, len(datasets)))
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write_relevance(result: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def format_table(result: dict, branch: str = "combined") -> str:
    """The scores of one branch as a text table: a row per block, a column per data set."""
    names = list(result["datasets"])
    lines = [f"{branch} relevance", "block  " + "  ".join(f"{n:>12}" for n in names)]
    for i, block in enumerate(result["blocks"]):
        cells = [result["datasets"][n][branch][i] for n in names]
        lines.append(f"{block:<6} " + "  ".join(f"{c:12.4f}" if c is not None else f"{'-':>12}" for c in cells))
    return "\n".join(lines)
