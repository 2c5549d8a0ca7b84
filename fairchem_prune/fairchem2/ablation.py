"""Layer-by-layer ablation on fairchem 2 (paper Appendix C, Fig. 5): fine-tune once per removed block.

For an inference checkpoint with b blocks and the fine-tuning template of fairchem's
``create_uma_finetune_dataset.py``, each selected block k is removed by slicing (``kept_blocks`` = all
but k), the reduced checkpoint gets a fine-tuning config (:mod:`fairchem_prune.fairchem2.finetune`)
and ``fairchem -c`` trains it, one run after the other. The validation metrics of each run's last
evaluation (fairchem evaluates the EMA weights) make the summary. Blocks are named as in the
relevance JSON: ``b_<i>``, i = the block's index in the original model.

Layout under ``out``: ``checkpoints/remove_b<i>.pt`` (sliced), ``configs/remove_b<i>.yaml``,
``runs/remove_b<i>/`` (fairchem's run: ``checkpoints/final/inference_ckpt.pt``, ``logs/metrics.jsonl``),
``logs/remove_b<i>.log`` (fairchem's console output), ``ablation.json``, ``ablation.md``,
``ablation.png``. A re-run skips finished runs and resumes an interrupted one from its newest
checkpoint (fairchem's own resume of a run folder).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.ablation_report import format_summary, plot_summary, relevance_scores
from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2 import runs as runs_module
from fairchem_prune.fairchem2.finetune import metric_values
from fairchem_prune.fairchem2.runs import FinetuneRun
from fairchem_prune.files import atomic_path


@dataclass
class AblationRun(FinetuneRun):
    removed: str = ""    # b_<i>, the removed block's name in the original model


def _say(message: str) -> None:
    print(f"[ablation] {message}", flush=True)


def plan(checkpoint: str | Path, out: str | Path, blocks: Sequence[int] | None = None) -> list[AblationRun]:
    """The runs of an ablation of ``checkpoint`` under ``out``: one per removed block position in
    ``blocks`` (default: every block)."""
    from fairchem_prune.fairchem2 import escn_md
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint, source_blocks

    checkpoint, out = Path(checkpoint), Path(out)
    source = read_inference_checkpoint(checkpoint)
    b = escn_md.num_blocks(source.model_config, f"checkpoint {checkpoint}")
    if b < 2:
        raise PruneError(f"{checkpoint} has {b} block; nothing to ablate")
    chosen = list(range(b)) if blocks is None else list(blocks)
    bad = [k for k in chosen if not 0 <= k < b]
    if bad or not chosen or len(set(chosen)) != len(chosen):
        raise PruneError(f"--blocks {chosen}: give distinct block positions 0-{b - 1} of {checkpoint} ({b} blocks)")
    origin = source_blocks(source, b)
    runs = []
    for k in chosen:
        name = f"remove_b{origin[k]}"
        runs.append(AblationRun.under(out, name, [i for i in range(b) if i != k], removed=f"b_{origin[k]}"))
    return runs


def prepare(runs: list[AblationRun], template: str | Path, checkpoint: str | Path, force: bool = False,
            **finetune) -> None:
    """:func:`~fairchem_prune.fairchem2.runs.prepare` of every run, with ablation's messages."""
    runs_module.prepare(runs, template, checkpoint, force=force, say=_say, **finetune)


def train_all(runs: list[AblationRun], fairchem_args: Sequence[str] = ()) -> None:
    """:func:`~fairchem_prune.fairchem2.runs.train_all` of every run, with ablation's messages."""
    runs_module.train_all(runs, fairchem_args, say=_say)


def default_metric(metrics: dict) -> str:
    """The forces MAE of the first data set if validated, else its energy MAE, else the total loss."""
    for suffix in (",forces,mae", ",energy,mae"):
        found = [k for k in metrics if k.endswith(suffix)]
        if found:
            return found[0]
    return "loss"


def summarize(runs: list[AblationRun], out: str | Path, metric: str | None = None,
              relevance: str | Path | None = None, dataset: str | None = None) -> dict:
    """The last validation metrics of every run (None where it has not finished), beside the
    relevance; written as ``ablation.json``, ``ablation.md`` and ``ablation.png`` in ``out``."""
    out = Path(out)
    scores = relevance_scores(relevance, dataset)
    rows = []
    for run in runs:
        row = {"removed": run.removed, "relevance": scores.get(run.removed) if scores else None, "metrics": None,
               "checkpoint": str(run.paths.final_checkpoint), "log": str(run.log), "seconds": None}
        last = run.last_validation()
        if last is not None:
            row["metrics"] = metric_values(last)
            row["step"] = last["step"]
        row["seconds"] = run.seconds
        rows.append(row)
    finished = [row for row in rows if row["metrics"]]
    if not finished:
        raise PruneError(f"no finished run under {out / 'runs'} (no checkpoints/final/inference_ckpt.pt with "
                         "validation metrics yet)")
    metric = metric or default_metric(finished[0]["metrics"])
    missing = [row["removed"] for row in finished if metric not in row["metrics"]]
    if missing:
        raise PruneError(f"metric {metric!r} is not among the validation metrics of {missing} "
                         f"(they have {sorted(finished[0]['metrics'])})")
    summary = {"primary_metric": metric, "runs": rows}
    with atomic_path(out / "ablation.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    (out / "ablation.md").write_text(format_summary(summary) + "\n")
    plot_summary(summary, out / "ablation.png")
    return summary
