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
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.ablation_report import format_summary, plot_summary, relevance_scores
from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2.finetune import RunPaths, read_metrics, read_template, write_finetune_config
from fairchem_prune.files import atomic_path


@dataclass
class AblationRun:
    name: str            # remove_b<i>
    removed: str         # b_<i>, the removed block's name in the original model
    kept_blocks: list[int]  # positions in the ablated checkpoint
    checkpoint: Path
    config: Path
    log: Path
    paths: RunPaths

    @property
    def finished(self) -> bool:
        return self.paths.final_checkpoint.is_file()


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
        runs.append(AblationRun(
            name=name, removed=f"b_{origin[k]}", kept_blocks=[i for i in range(b) if i != k],
            checkpoint=out / "checkpoints" / f"{name}.pt", config=out / "configs" / f"{name}.yaml",
            log=out / "logs" / f"{name}.log", paths=RunPaths((out / "runs").resolve(), name),
        ))
    return runs


def prepare(runs: list[AblationRun], template: str | Path, checkpoint: str | Path, force: bool = False,
            **finetune) -> None:
    """Slice and write the config of every run (kept when already there and the same; ``force``:
    rewritten, and the run's folder removed so that it starts over). ``finetune``: the overrides of
    :func:`~fairchem_prune.fairchem2.finetune.write_finetune_config`."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    read_template(template)
    if finetune.get("steps") and not finetune.get("evaluate_every_n_steps"):
        finetune["evaluate_every_n_steps"] = finetune["steps"]  # a validation at the last step
    for n, run in enumerate(runs, 1):
        for folder in (run.checkpoint.parent, run.config.parent, run.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
        if force or not run.checkpoint.exists():
            _say(f"{n}/{len(runs)} {run.name}: slicing to blocks {run.kept_blocks} -> {run.checkpoint}")
            slice_inference_checkpoint(checkpoint, run.checkpoint, kept_blocks=run.kept_blocks, force=True)
        else:
            kept = (getattr(read_inference_checkpoint(run.checkpoint), "fairchem_prune", None) or {}).get("kept_blocks")
            if kept != run.kept_blocks:
                raise PruneError(f"{run.checkpoint} keeps blocks {kept}, not {run.kept_blocks}; is {run.checkpoint.parent.parent} "
                                 "the ablation of another checkpoint? use another --out or pass --force")
        draft = run.config.with_name(f".{run.config.stem}.draft.yaml")
        try:
            write_finetune_config(template, run.checkpoint, draft, run_dir=run.paths.run_dir, run_id=run.name,
                                  force=True, **finetune)
            text = draft.read_text().replace(str(draft), str(run.config))
        finally:
            draft.unlink(missing_ok=True)
        if run.config.exists() and run.config.read_text() != text and not force:
            raise PruneError(f"{run.config} was written with other settings; use another --out or pass --force "
                             "(which starts the runs over)")
        if force and run.paths.folder.exists():
            shutil.rmtree(run.paths.folder)
        with atomic_path(run.config) as tmp:
            tmp.write_text(text)


def fairchem_command() -> Path:
    """The ``fairchem`` command of this environment."""
    found = Path(sys.executable).parent / "fairchem"
    if found.is_file():
        return found
    which = shutil.which("fairchem")
    if which is None:
        raise PruneError("the fairchem command is not installed in this environment (fairchem-core 2.x provides it)")
    return Path(which)


def train_all(runs: list[AblationRun], fairchem_args: Sequence[str] = ()) -> None:
    """``fairchem -c`` of every unfinished run, one after the other, console output to its log."""
    command = fairchem_command()
    for n, run in enumerate(runs, 1):
        if run.finished:
            _say(f"{n}/{len(runs)} {run.name}: finished before, skipped ({run.paths.final_checkpoint})")
            continue
        resuming = run.paths.checkpoints.is_dir() and any(run.paths.checkpoints.iterdir())
        _say(f"{n}/{len(runs)} {run.name}: {'resuming' if resuming else 'training'} (fairchem -c {run.config}; "
             f"log: {run.log})")
        start = time.perf_counter()
        with run.log.open("a") as log:
            result = subprocess.run([str(command), "-c", str(run.config), *fairchem_args], stdout=log,
                                    stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if result.returncode != 0 or not run.finished:
            raise PruneError(f"fairchem run {run.name} failed (exit status {result.returncode}, {seconds:.0f} s); "
                             f"see {run.log}; a re-run resumes it")
        (run.paths.folder / "fairchem_prune_run.json").write_text(json.dumps({"seconds": seconds}) + "\n")
        _say(f"{n}/{len(runs)} {run.name}: done in {seconds:.0f} s -> {run.paths.final_checkpoint}")


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
        if run.finished and run.paths.metrics.is_file():
            _, val = read_metrics(run.paths.metrics)
            if val:
                last = val[-1]
                row["metrics"] = {k: v for k, v in last.items() if k not in ("split", "step")}
                row["step"] = last["step"]
        timing = run.paths.folder / "fairchem_prune_run.json"
        if timing.is_file():
            row["seconds"] = json.loads(timing.read_text())["seconds"]
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
