"""Fine-tuning runs of sliced checkpoints through the stock ``fairchem -c`` (ablation, compress).

A :class:`FinetuneRun` is one sliced checkpoint, its fine-tuning config
(:func:`~fairchem_prune.fairchem2.finetune.write_finetune_config`) and its run folder. :func:`prepare`
slices and writes every run (kept when already there and the same), :func:`train_all` trains the
unfinished ones one after the other, each console to its log; a re-run skips finished runs and resumes
an interrupted one from its newest checkpoint (fairchem's own resume of a run folder).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2.finetune import RunPaths, read_metrics, read_template, write_finetune_config
from fairchem_prune.files import atomic_path

TIMING = "fairchem_prune_run.json"


@dataclass
class FinetuneRun:
    name: str
    kept_blocks: list[int]  # positions in the checkpoint it is sliced from
    checkpoint: Path | None  # the sliced checkpoint it starts from (None: random weights, the config's model)
    config: Path
    log: Path
    paths: RunPaths
    sliced: bool = True     # checkpoint is the slice of kept_blocks that prepare makes; else it is given

    @classmethod
    def under(cls, out: Path, name: str, kept_blocks: list[int], start: Path | None = None, **more) -> "FinetuneRun":
        """The run ``name`` laid out under ``out``: ``checkpoints/<name>.pt`` (or ``start``: the run
        trains that checkpoint, e.g. a distilled student), ``configs/<name>.yaml``, ``logs/<name>.log``,
        ``runs/<name>/``; ``more``: a subclass's fields."""
        return cls(name=name, kept_blocks=list(kept_blocks), checkpoint=start or out / "checkpoints" / f"{name}.pt",
                   config=out / "configs" / f"{name}.yaml", log=out / "logs" / f"{name}.log",
                   paths=RunPaths((out / "runs").resolve(), name), sliced=start is None, **more)

    @property
    def finished(self) -> bool:
        return self.paths.final_checkpoint.is_file()

    def last_validation(self) -> dict | None:
        """The metrics of the run's last validation (``metrics.jsonl``), None before it finished."""
        if not (self.finished and self.paths.metrics.is_file()):
            return None
        _, val = read_metrics(self.paths.metrics)
        return val[-1] if val else None

    @property
    def seconds(self) -> float | None:
        """Wall time of the training command that finished the run."""
        timing = self.paths.folder / TIMING
        return json.loads(timing.read_text())["seconds"] if timing.is_file() else None


def _print(message: str) -> None:
    print(message, flush=True)


def prepare(runs: Sequence[FinetuneRun], template: str | Path, checkpoint: str | Path, force: bool = False,
            say: Callable[[str], None] = _print, **finetune) -> None:
    """Slice ``checkpoint`` (for the runs that train a slice) and write the config of every run (kept
    when already there and the same; ``force``: rewritten, and the run's folder removed so that it
    starts over). ``finetune``: the overrides of
    :func:`~fairchem_prune.fairchem2.finetune.write_finetune_config` (``distill``: distillations)."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    read_template(template)
    if finetune.get("steps") and not finetune.get("evaluate_every_n_steps"):
        finetune["evaluate_every_n_steps"] = finetune["steps"]  # a validation at the last step
    for n, run in enumerate(runs, 1):
        for folder in (run.checkpoint.parent, run.config.parent, run.log.parent):
            folder.mkdir(parents=True, exist_ok=True)
        if not run.sliced:
            if not run.checkpoint.is_file():
                raise PruneError(f"run {run.name} starts from {run.checkpoint}, which does not exist")
        elif force or not run.checkpoint.exists():
            say(f"{n}/{len(runs)} {run.name}: slicing to blocks {run.kept_blocks} -> {run.checkpoint}")
            slice_inference_checkpoint(checkpoint, run.checkpoint, kept_blocks=run.kept_blocks, force=True)
        else:
            kept = (getattr(read_inference_checkpoint(run.checkpoint), "fairchem_prune", None) or {}).get("kept_blocks")
            if kept != run.kept_blocks:
                raise PruneError(f"{run.checkpoint} keeps blocks {kept}, not {run.kept_blocks}; is {run.checkpoint.parent.parent} "
                                 "the work of another checkpoint? use another --out or pass --force")
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


def train_all(runs: Sequence[FinetuneRun], fairchem_args: Sequence[str] = (), say: Callable[[str], None] = _print) -> None:
    """``fairchem -c`` of every unfinished run, one after the other, console output to its log."""
    command = fairchem_command()
    for n, run in enumerate(runs, 1):
        if run.finished:
            say(f"{n}/{len(runs)} {run.name}: finished before, skipped ({run.paths.final_checkpoint})")
            continue
        resuming = run.paths.checkpoints.is_dir() and any(run.paths.checkpoints.iterdir())
        say(f"{n}/{len(runs)} {run.name}: {'resuming' if resuming else 'training'} (fairchem -c {run.config}; "
            f"log: {run.log})")
        start = time.perf_counter()
        with run.log.open("a") as log:
            result = subprocess.run([str(command), "-c", str(run.config), *fairchem_args], stdout=log,
                                    stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - start
        if result.returncode != 0 or not run.finished:
            raise PruneError(f"fairchem run {run.name} failed (exit status {result.returncode}, {seconds:.0f} s); "
                             f"see {run.log}; a re-run resumes it")
        (run.paths.folder / TIMING).write_text(json.dumps({"seconds": seconds}) + "\n")
        say(f"{n}/{len(runs)} {run.name}: done in {seconds:.0f} s -> {run.paths.final_checkpoint}")
