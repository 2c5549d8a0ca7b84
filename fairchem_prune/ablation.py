"""Layer-by-layer ablation (paper Appendix C, Fig. 5): fine-tune once per removed block.

For a pre-trained model with b blocks this writes b fine-tuning configs, one per removed block, each
including the user's fine-tuning config and keeping the other blocks via ``kept_blocks``. Blocks are
named as in the relevance JSON (:func:`fairchem_prune.relevance.block_names`; e.g. ``b_2``, or
``f_3`` where the scored features are readout partitions and f_1 is the embedding, never removed).
They run through the stock ``fairchem`` command (locally, or on SLURM with
its ``--submit``), and the summary reads the validation metrics that fairchem stores in each run's
``best_checkpoint.pt``.

Layout under ``out``: ``configs/remove_<block>.yml`` (``remove_f3``, ``remove_b2``), ``runs/``
(fairchem's run dir: ``checkpoints/``, ``results/``, ``logs/``), ``logs/remove_<block>.log``,
``ablation.json``, ``ablation.png``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from fairchem_prune.ablation_report import format_summary, plot_summary, relevance_scores  # noqa: F401 (re-exported)
from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem_runs import FairchemRun, train_all


_RUN = re.compile(r"remove_([a-z])(\d+)")


@dataclass
class AblationRun:
    name: str            # remove_f<p> / remove_b<k>
    removed: str         # f_<p> / b_<k>, the removed block's name in the original model
    kept_blocks: list[int]
    config: Path


def write_ablation_configs(config: str | Path, pretrained: str | Path, out: str | Path, force: bool = False) -> list[AblationRun]:
    """One config per removed block of ``pretrained`` (monolithic or hydra), each including ``config``,
    a fine-tuning config of the same architecture's reduced model (or hydra with its reduced backbone)."""
    from fairchem.core.common.utils import load_config

    from fairchem_prune.checkpoints import load_source

    config, pretrained, out = Path(config), Path(pretrained), Path(out)
    if not config.is_file():
        raise PruneError(f"fine-tuning config {config}: no such file")
    source = load_source(pretrained)
    architecture = source.architecture
    if source.num_blocks < 2:
        raise PruneError(f"{pretrained} has {source.num_blocks} block; nothing to ablate")
    model = load_config(str(config))[0].get("model", {})
    reduced = architecture.reduced_backbone if source.is_hydra else architecture.reduced_model
    found = model.get("backbone", {}).get("model") if model.get("name") == "hydra" else model.get("name", reduced)
    if found != reduced:
        raise PruneError(f"fine-tuning config {config} trains {found!r} but the {architecture.label} checkpoint "
                         f"{pretrained} needs {reduced}; give a fine-tuning config of that model")
    form = {"name": "hydra"} if source.is_hydra else {}
    folder = out / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    runs = []
    for k, removed in enumerate(architecture.removable_block_names(source.source_blocks)):
        stem = "remove_" + removed.replace("_", "")
        run = AblationRun(
            name=stem, removed=removed,
            kept_blocks=[i for i in range(source.num_blocks) if i != k], config=folder / f"{stem}.yml",
        )
        if run.config.exists() and not force:
            raise PruneError(f"{run.config} already exists; use another --out or pass --force")
        section = {"pretrained_checkpoint": str(pretrained.resolve()), "num_blocks_kept": None, "kept_blocks": run.kept_blocks}
        body = {"includes": [str(config.resolve())], "model": architecture.with_core(form, section)}
        header = f"# Ablation: {config.name} with block {k} ({run.removed}) of {pretrained.name} removed.\n"
        run.config.write_text(header + yaml.safe_dump(body, sort_keys=False))
        load_config(str(run.config))  # fairchem's own loader must accept it
        runs.append(run)
    return runs


def fairchem_run(run: AblationRun, out: Path) -> FairchemRun:
    """The stock ``fairchem`` training run of ``run`` under ``out`` (``runs/``, ``logs/<name>.log``)."""
    return FairchemRun(run.name, run.config, out / "runs", out / "logs" / f"{run.name}.log")


def launch_ablation(runs: list[AblationRun], out: str | Path, fairchem_args: list[str] | None = None,
                    submit: bool = False) -> None:
    """Train every run that has not finished (resuming interrupted ones), or submit them to SLURM."""
    out = Path(out)
    jobs = [fairchem_run(run, out) for run in runs]
    if not submit:
        train_all(jobs, list(fairchem_args or []), say=_say)
        return
    for job in jobs:
        _say(f"{job.name}: submitting (log: {job.log})")
        job.train(list(fairchem_args or []), submit=True)


def _say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def summarize_ablation(out: str | Path, relevance: str | Path | None = None, dataset: str | None = None) -> dict:
    """Validation metrics of every finished run (from its ``best_checkpoint.pt``), next to the
    block relevance of a :mod:`fairchem_prune.relevance` JSON if given. Writes ``ablation.json``."""
    import torch

    out = Path(out)
    configs = [p for p in (out / "configs").glob("remove_*.yml") if _RUN.fullmatch(p.stem)]
    configs.sort(key=lambda p: int(_RUN.fullmatch(p.stem).group(2)))
    if not configs:
        raise PruneError(f"{out} has no ablation configs (configs/remove_*.yml); run the tool without --summarize first")
    scores = relevance_scores(relevance, dataset)
    rows, primary = [], None
    for config in configs:
        removed = "{}_{}".format(*_RUN.fullmatch(config.stem).groups())
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
