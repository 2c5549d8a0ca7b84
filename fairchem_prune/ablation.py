"""Layer-by-layer ablation (paper Appendix C, Fig. 5): fine-tune once per removed interaction block.

For a pre-trained model with b interaction blocks this writes b fine-tuning configs, one per removed
block (partition f_{k+2} for block k; f_1, the embedding, is never removed), each including the
user's fine-tuning config and keeping the other blocks via ``kept_blocks``. They run through the stock
``fairchem`` command (locally, or on SLURM with its ``--submit``), and the summary reads the
validation metrics that fairchem stores in each run's ``best_checkpoint.pt``.

Layout under ``out``: ``configs/remove_f<p>.yml``, ``runs/`` (fairchem's run dir: ``checkpoints/``,
``results/``, ``logs/``), ``logs/remove_f<p>.log``, ``ablation.json``, ``ablation.png``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from fairchem_prune.errors import PruneError


@dataclass
class AblationRun:
    name: str            # remove_f<p>
    removed: str         # f_<p>, the partition of the removed block in the original model
    kept_blocks: list[int]
    config: Path


def write_ablation_configs(config: str | Path, pretrained: str | Path, out: str | Path, force: bool = False) -> list[AblationRun]:
    """One config per removed block of ``pretrained``, each including ``config``."""
    from fairchem.core.common.utils import load_config

    from fairchem_prune.checkpoints import load_gemnet_source

    config, pretrained, out = Path(config), Path(pretrained), Path(out)
    if not config.is_file():
        raise PruneError(f"fine-tuning config {config}: no such file")
    source = load_gemnet_source(pretrained)
    if source.num_blocks < 2:
        raise PruneError(f"{pretrained} has {source.num_blocks} interaction block; nothing to ablate")
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for k in range(source.num_blocks):
        partition = source.source_blocks[k] + 2
        run = AblationRun(
            name=f"remove_f{partition}", removed=f"f_{partition}",
            kept_blocks=[i for i in range(source.num_blocks) if i != k], config=folder / f"remove_f{partition}.yml",
        )
        if run.config.exists() and not force:
            raise PruneError(f"{run.config} already exists; use another --out or pass --force")
        body = {
            "includes": [str(config.resolve())],
            "model": {
                "name": "gemnet_oc_reduced",
                "pretrained_checkpoint": str(pretrained.resolve()),
                "num_blocks_kept": None,
                "kept_blocks": run.kept_blocks,
            },
        }
        header = f"# Ablation: {config.name} with interaction block {k} ({run.removed}) of {pretrained.name} removed.\n"
        run.config.write_text(header + yaml.safe_dump(body, sort_keys=False))
        load_config(str(run.config))  # fairchem's own loader must accept it
        runs.append(run)
    return runs


def _done_marker(out: Path, run: AblationRun) -> Path:
    return out / "logs" / f"{run.name}.done"


def fairchem_command(run: AblationRun, out: Path, fairchem_args: list[str], submit: bool) -> list[str]:
    """The stock ``fairchem`` command line that trains ``run``."""
    command = [
        sys.executable, "-m", "fairchem.core._cli", "--mode", "train", "--config-yml", str(run.config),
        "--run-dir", str((out / "runs").resolve()), "--timestamp-id", run.name, "--identifier", run.name,
        *fairchem_args,
    ]
    if submit:
        command += ["--submit", "--logdir", str((out / "runs" / "slurm").resolve())]
    else:
        resume = out / "runs" / "checkpoints" / run.name / "checkpoint.pt"
        if resume.exists():
            command += ["--checkpoint", str(resume.resolve())]
    return command


def launch_ablation(runs: list[AblationRun], out: str | Path, fairchem_args: list[str] | None = None,
                    submit: bool = False) -> None:
    """Train every run that has not finished (resuming interrupted ones), or submit them to SLURM."""
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs, 1):
        if _done_marker(out, run).exists():
            print(f"[ablation] {i}/{len(runs)} {run.name}: done before, skipped", flush=True)
            continue
        log = out / "logs" / f"{run.name}.log"
        print(f"[ablation] {i}/{len(runs)} {run.name}: {'submitting' if submit else 'training'} (log: {log})", flush=True)
        with open(log, "w") as sink:
            status = subprocess.run(fairchem_command(run, out, list(fairchem_args or []), submit),
                                    stdout=sink, stderr=subprocess.STDOUT).returncode
        if status:
            raise PruneError(f"fairchem failed on {run.name} (exit status {status}); see {log}")
        if not submit:
            _done_marker(out, run).touch()


def summarize_ablation(out: str | Path, relevance: str | Path | None = None, dataset: str | None = None) -> dict:
    """Validation metrics of every finished run (from its ``best_checkpoint.pt``), next to the
    block relevance of a :mod:`fairchem_prune.relevance` JSON if given. Writes ``ablation.json``."""
    import torch

    out = Path(out)
    configs = sorted((out / "configs").glob("remove_f*.yml"), key=lambda p: int(p.stem.removeprefix("remove_f")))
    if not configs:
        raise PruneError(f"{out} has no ablation configs (configs/remove_f*.yml); run the tool without --summarize first")
    scores = None
    if relevance is not None:
        data = json.loads(Path(relevance).read_text())
        name = dataset or next(iter(data["datasets"]))
        if name not in data["datasets"]:
            raise PruneError(f"relevance file {relevance} has no data set {name!r} (has {list(data['datasets'])})")
        scores = dict(zip(data["blocks"], data["datasets"][name]["combined"]))
    rows, primary = [], None
    for config in configs:
        removed = "f_" + config.stem.removeprefix("remove_f")
        best = out / "runs" / "checkpoints" / config.stem / "best_checkpoint.pt"
        row = {"removed": removed, "relevance": scores.get(removed) if scores else None, "metrics": None}
        if best.exists():
            checkpoint = torch.load(best, map_location="cpu", weights_only=False)
            primary = checkpoint["config"]["evaluation_metrics"].get("primary_metric", primary)
            row["metrics"] = {k: float(v["metric"]) for k, v in (checkpoint.get("val_metrics") or {}).items()}
        rows.append(row)
    if all(row["metrics"] is None for row in rows):
        raise PruneError(f"no finished run under {out / 'runs'} (no best_checkpoint.pt yet)")
    summary = {"primary_metric": primary, "runs": rows}
    (out / "ablation.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict) -> str:
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
