"""Training runs of the stock ``fairchem --mode train`` command, resumable, one or several at a time.

A run is a config file and a name; fairchem writes its checkpoints to
``RUN_DIR/checkpoints/NAME/`` and its tensorboard events to ``RUN_DIR/logs/tensorboard/NAME/``. A run
that was interrupted resumes from fairchem's own ``checkpoint.pt``; a finished one leaves a marker
``LOG.done`` beside its log and is not run again. While a run trains, :class:`EpochProgress` shows its
epochs from fairchem's own log lines; fairchem's tqdm bars are off in the run (``TQDM_DISABLE``), so
the log holds no carriage-return redraws.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.console import progress
from fairchem_prune.errors import PruneError


#: the stock ``fairchem`` command, as this interpreter runs it. Its module is imported (not run with
#: ``-m``, which bypasses import hooks), so that this package's hooks on it apply: one-line errors and
#: ``--submit --cpu`` on CPU Slurm nodes (:mod:`fairchem_prune._autoregister`)
FAIRCHEM = (sys.executable, "-c", "import sys; from fairchem.core._cli import main; sys.exit(main())")


@dataclass(frozen=True)
class FairchemRun:
    name: str
    config: Path
    run_dir: Path
    log: Path
    args: tuple[str, ...] = ()   #: fairchem arguments of this run only (e.g. its --seed)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints" / self.name

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoint_dir / "best_checkpoint.pt"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "logs" / "tensorboard" / self.name

    def validation_curve(self, metric: str = "forces_mae") -> tuple[list[tuple[float, int, float]], float]:
        """``([(seconds, step, value)], training seconds)`` of the validation ``metric`` in the run's
        tensorboard events; seconds count from one step before the first logged training step (start-up
        time excluded) to each validation, and to the end of training (its last step or validation)."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(self.tensorboard_dir), size_guidance={"scalars": 0})
        events.Reload()
        train = events.Scalars("train/loss")
        step_time = (train[1].wall_time - train[0].wall_time) / max(1, train[1].step - train[0].step) if len(train) > 1 else 0.0
        start = train[0].wall_time - step_time * train[0].step
        val = events.Scalars(f"val/{metric}")
        return [(e.wall_time - start, e.step, e.value) for e in val], max(train[-1].wall_time, val[-1].wall_time) - start

    @property
    def done_marker(self) -> Path:
        return self.log.with_suffix(".done")

    @property
    def finished(self) -> bool:
        return self.done_marker.exists()

    @property
    def submitted_marker(self) -> Path:
        """``LOG.submitted``: the Slurm job id of a run submitted with :meth:`submit`."""
        return self.log.with_suffix(".submitted")

    def submit(self, fairchem_args: Sequence[str] = ()) -> str:
        """Submit the run to Slurm through fairchem's ``--submit`` (submitit); returns the job id, also
        kept in :attr:`submitted_marker`."""
        lines: list[str] = []
        self.train(fairchem_args, on_line=lines.append, submit=True)
        found = [line.rsplit("Submitted jobs: ", 1)[1].strip() for line in lines if "Submitted jobs: " in line]
        if not found:
            raise PruneError(f"fairchem did not report a Slurm job for run {self.name}; see {self.log}")
        self.submitted_marker.write_text(found[-1] + "\n")
        return found[-1]

    def slurm_state(self) -> str | None:
        """Where a submitted run stands: None (never submitted, or finished here), ``"done"`` (the job
        returned; the run is then marked finished), or the job's Slurm state (``PENDING``,
        ``RUNNING``; ``FAILED`` and the like, or ``failed`` when its result is an error)."""
        if self.finished or not self.submitted_marker.exists():
            return None
        import submitit
        from submitit.core.utils import pickle_load

        job = submitit.SlurmJob(folder=self.run_dir / "slurm" / "%j", job_id=self.submitted_marker.read_text().strip())
        if not job.paths.result_pickle.exists():
            return job.state
        outcome, _ = pickle_load(job.paths.result_pickle)
        if outcome != "success":
            return "failed"
        self.done_marker.write_text("slurm\n")
        return "done"

    def command(self, fairchem_args: Sequence[str] = (), submit: bool = False) -> list[str]:
        """The stock ``fairchem`` command line that trains (or resumes) this run."""
        command = [
            *FAIRCHEM, "--mode", "train", "--config-yml", str(self.config.resolve()),
            "--run-dir", str(self.run_dir.resolve()), "--timestamp-id", self.name, "--identifier", self.name,
            *self.args, *fairchem_args,
        ]
        if submit:
            command += ["--submit", "--logdir", str((self.run_dir / "slurm").resolve())]
        elif (self.checkpoint_dir / "checkpoint.pt").exists():
            command += ["--checkpoint", str((self.checkpoint_dir / "checkpoint.pt").resolve())]
        return command

    def train(self, fairchem_args: Sequence[str] = (), threads: int | None = None,
              on_line: Callable[[str], None] | None = None, submit: bool = False) -> float:
        """Run fairchem to the end (``threads``: OMP/torch threads of the process), or only submit the
        run to SLURM (``submit``: no finished marker then); returns the wall time in s. Every output
        line goes to the log and to ``on_line``."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TQDM_DISABLE="1", **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
        start = time.perf_counter()
        with open(self.log, "a") as sink:
            process = subprocess.Popen(self.command(fairchem_args, submit), stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, env=env)
            for line in process.stdout:
                sink.write(line)
                if on_line is not None:
                    on_line(line)
            status = process.wait()
        if status:
            raise PruneError(f"fairchem failed on run {self.name} (exit status {status}); see {self.log}")
        seconds = time.perf_counter() - start
        if not submit:
            self.done_marker.write_text(f"{seconds:.1f}\n")
        return seconds


class EpochProgress:
    """``on_line`` of :meth:`FairchemRun.train`: a progress bar of the run's epochs
    (:func:`fairchem_prune.console.progress`), from fairchem's log: its config dump's ``max_epochs``
    (or a trainer's own ``max_epochs: N`` in a later INFO line, where it sets the length itself, as
    the distill trainer's sample budget does), then the ``epoch: E`` of its training lines (every
    ``print_every`` steps) and validation lines."""

    MAX_EPOCHS = re.compile(r"^\s+max_epochs: (\d+)\s*$")
    SET_EPOCHS = re.compile(r"\(INFO\): .*\bmax_epochs: (\d+)")
    EPOCH = re.compile(r"\(INFO\): .*\bepoch: ([-+.e\d]+)")

    def __init__(self, name: str) -> None:
        self.name, self.bar = name, None

    def __call__(self, line: str) -> None:
        if self.bar is None:
            found = self.MAX_EPOCHS.match(line)
            if found:
                self.bar = progress(total=int(found.group(1)), desc=f"{self.name}: epoch", unit="epoch",
                                    bar_format="{desc} {n:.2f}/{total} |{bar}| [{elapsed}<{remaining}]")
            return
        found = self.SET_EPOCHS.search(line)
        if found:
            self.bar.total = int(found.group(1))
            self.bar.refresh()
            return
        found = self.EPOCH.search(line)
        if found:
            self.bar.update(float(found.group(1)) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train_all(runs: Sequence[FairchemRun], fairchem_args: Sequence[str] = (), workers: int = 1,
              say: Callable[[str], None] = print) -> None:
    """Train every unfinished run, ``workers`` at a time (each process single-threaded when
    ``workers`` > 1, so that they share the cores); the first failure is raised after the others end."""
    pending = [run for run in runs if not run.finished]
    for run in runs:
        if run.finished:
            say(f"{run.name}: finished before, skipped")

    def one(run: FairchemRun) -> None:
        say(f"{run.name}: training{' (resuming)' if (run.checkpoint_dir / 'checkpoint.pt').exists() else ''}"
            f" -> {run.log}")
        epochs = EpochProgress(run.name)
        try:
            seconds = run.train(fairchem_args, threads=1 if workers > 1 else None, on_line=epochs)
        finally:
            epochs.close()
        say(f"{run.name}: done in {seconds:.0f} s")

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = [pool.submit(one, run) for run in pending]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]


def build_trainer(args: Sequence[str]):
    """The trainer of the ``fairchem`` command line ``args``, built in this process as fairchem's runner
    builds it (no training)."""
    import torch
    from fairchem.core.common import distutils
    from fairchem.core.common.flags import flags
    from fairchem.core.common.utils import build_config, new_trainer_context

    parsed, rest = flags.get_parser().parse_known_args([str(a) for a in args])
    config = build_config(parsed, rest)
    distutils.setup_env_local()
    try:
        with new_trainer_context(config=config) as ctx:
            return ctx.trainer
    finally:  # fairchem's context skips its clean-up when the trainer cannot be built
        if torch.distributed.is_initialized():
            distutils.cleanup()
