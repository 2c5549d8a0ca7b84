"""The host-independent part of the layer-by-layer ablation (both hosts): relevance beside the
metrics, the summary table and figure.

A summary is ``{"primary_metric": NAME, "runs": [{"removed": "b_2", "relevance": float | None,
"metrics": {NAME: float, ...} | None}, ...]}`` (``metrics`` None: the run has not finished), written as
``ablation.json`` by :mod:`fairchem_prune.ablation` (1.x) and :mod:`fairchem_prune.fairchem2.ablation`.
"""

from __future__ import annotations

import json
from pathlib import Path

from fairchem_prune.errors import PruneError


def relevance_scores(relevance: str | Path | None, dataset: str | None = None) -> dict[str, float] | None:
    """Block name -> combined relevance of a relevance JSON (either host's ``relevance`` command) for
    ``dataset`` (default: its first); None without a file."""
    if relevance is None:
        return None
    path = Path(relevance)
    if not path.is_file():
        raise PruneError(f"relevance file {path}: no such file")
    data = json.loads(path.read_text())
    name = dataset or next(iter(data["datasets"]))
    if name not in data["datasets"]:
        raise PruneError(f"relevance file {relevance} has no data set {name!r} (has {list(data['datasets'])})")
    return dict(zip(data["blocks"], data["datasets"][name]["combined"]))


def format_summary(summary: dict) -> str:
    """The summary as a markdown table: removed block, validation metric, relevance."""
    metric = summary["primary_metric"]
    lines = [f"| removed block | val {metric} | relevance |", "|---|---:|---:|"]
    for row in summary["runs"]:
        value = row["metrics"].get(metric) if row["metrics"] else None
        value_text = f"{value:.4g}" if value is not None else "not finished"
        relevance_text = f"{row['relevance']:.4f}" if row["relevance"] is not None else "-"
        lines.append(f"| {row['removed']} | {value_text} | {relevance_text} |")
    return "\n".join(lines)


def plot_summary(summary: dict, path: str | Path) -> None:
    """Appendix Fig. 5 analogue: validation metric per removed block, relevance beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["primary_metric"]
    labels = [row["removed"] for row in summary["runs"]]
    values = [row["metrics"].get(metric, float("nan")) if row["metrics"] else float("nan") for row in summary["runs"]]
    with_relevance = any(row["relevance"] is not None for row in summary["runs"])
    fig, axes = plt.subplots(1, 2 if with_relevance else 1, figsize=(9 if with_relevance else 5, 3.4), squeeze=False)
    axes[0, 0].bar(labels, values, color="tab:red")
    axes[0, 0].set(title="fine-tuned with one block removed", ylabel=f"val {metric}", xlabel="removed block")
    if with_relevance:
        axes[0, 1].bar(labels, [row["relevance"] or 0.0 for row in summary["runs"]], color="tab:blue")
        axes[0, 1].set(title="GradCAM relevance", ylabel="relevance (combined)", xlabel="block")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
