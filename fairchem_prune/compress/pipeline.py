"""``fairchem-prune compress`` beside fairchem-core 1.x: from a pre-trained checkpoint to the fastest
model whose error on the user's task stays within a budget of the full model's.

1. ``relevance``  (``--order relevance``) GradCAM block relevance of the pre-trained model under the
                  task's loss on its training data -> ``relevance.json``, ``relevance.png``; a k-block
                  candidate keeps the k most relevant blocks (``--order last``: the first k)
2. candidates     the full model (the reference) and each block count, fine-tuned with the architecture's
                  recipe for the same ``--epochs`` (``auto``: each until its validation plateau); with ``--distill DATA`` also each count distilled from
                  the full model on DATA first -> ``configs/``, ``runs/``, ``logs/``
3. ``benchmark``  throughput, FLOP bound, parameters and peak memory per block count -> ``benchmark.json``
4. pick           of the candidates whose best validation error is within ``--budget`` of the
                  reference's, the fewest blocks (``--pick fewest``) or the highest throughput not
                  flagged by the benchmark (``--pick fastest``; :mod:`fairchem_prune.compress.budget`)
                  -> ``compress.json``, ``report.md``, ``pareto.png``
5. final          the pick fine-tuned to the end (the recipe's epochs, or ``--final-epochs``; with
                  ``--epochs auto``, until its plateau) ->
                  ``compressed_<candidate>.pt``, a self-contained fairchem checkpoint

Every finished step is skipped on a re-run; an interrupted training run resumes. ``--submit`` sends the
runs to Slurm (fairchem's submitit launcher) instead of training them here; re-running the same command
reports the jobs' state and goes on with what they allow (the next step's runs, the pick).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from fairchem_prune.blocks import kept_for_counts
from fairchem_prune.compress import report
from fairchem_prune.compress.budget import PICKS, parse_budget
from fairchem_prune.compress.workdir import block_counts, check_settings
from fairchem_prune.compress.configs import LEADERBOARD_METRIC, finetune_base, run_config, write_config
from fairchem_prune.errors import PruneError, require_device
from fairchem_prune.fairchem_runs import FairchemRun, train_all
from fairchem_prune.files import json_stage
from fairchem_prune.trainers.plateau import Plateau, trained_epochs

ORDERS = ("relevance", "last")
#: ``--epochs auto``: each fine-tune runs the recipe's schedule until its validation plateau
AUTO = "auto"


@dataclass(frozen=True)
class CompressSettings:
    """What defines the candidates: a re-run with other values needs another ``--out``."""

    checkpoint: str
    tasks: list[str]
    train: str
    val: str
    epochs: int | str = 5                 #: each candidate's fine-tuning epochs, or "auto" (until its plateau)
    blocks: list[int] | None = None       #: block counts to try (default: every count below the checkpoint's)
    order: str = "relevance"
    distill: str | None = None            #: LMDB of pre-training structures for the distilled variants
    distill_samples: int | None = None    #: structures seen by each distillation run (default: one pass over it)
    relevance_samples: int = 200
    seed: int = 0


@dataclass
class Candidate:
    name: str                   #: full_<b>b, br_<k>b, kd_<k>b
    blocks: int
    kept: list[int]             #: the checkpoint's blocks it keeps (0-based)
    distilled: bool
    start: Path                      #: the checkpoint its fine-tuning starts from (kd_: the distilled student)
    run: FairchemRun | None = None   #: its fine-tuning (a kd_ candidate's is written once its student is)
    distill_run: FairchemRun | None = None

    def core(self) -> dict:
        """Its fine-tuning model's checkpoint and kept blocks (kd_: every block of the student)."""
        return {"pretrained_checkpoint": str(self.start.resolve()),
                "kept_blocks": list(range(self.blocks)) if self.distilled else self.kept}


def _say(message: str) -> None:
    print(f"[compress] {message}", flush=True)


def run_compress(settings: CompressSettings, out: str | Path, budget: str, final_epochs: int | None = None,
                 device: str = "cpu", workers: int = 1, submit: bool = False,
                 fairchem_args: list[str] | None = None, pick: str = "fewest") -> dict | None:
    """Run or continue every step (see the module docstring), picking by the rule ``pick``
    (:data:`~fairchem_prune.compress.budget.PICKS`); returns ``compress.json``'s content, or None while
    submitted runs are still going."""
    from fairchem_prune.checkpoints import load_source

    out = Path(out)
    checkpoint = Path(settings.checkpoint)
    tasks = [Path(t) for t in settings.tasks]
    train, val = Path(settings.train), Path(settings.val)
    if settings.order not in ORDERS:
        raise PruneError(f"--order must be one of {ORDERS}, got {settings.order!r}")
    if pick not in PICKS:
        raise PruneError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    auto = settings.epochs == AUTO
    if (not auto and (not isinstance(settings.epochs, int) or settings.epochs < 1)) or \
            (final_epochs is not None and final_epochs < 1):
        raise PruneError(f"--epochs must be at least 1 or {AUTO}, and --final-epochs at least 1; got --epochs "
                         f"{settings.epochs}" + ("" if final_epochs is None else f", --final-epochs {final_epochs}"))
    parse_budget(budget, None)  # the unit is checked against the task's metric below
    train_size = _dataset_size(train, "--train")
    _dataset_size(val, "--val")
    if settings.distill:
        _dataset_size(Path(settings.distill), "--distill")
        if Path(settings.distill).resolve() == val.resolve():
            raise PruneError(f"--distill {settings.distill} is the validation data; give pre-training structures")
    source = load_source(checkpoint)
    architecture, b = source.architecture, source.num_blocks
    counts = block_counts(settings.blocks, b)
    base = finetune_base(architecture, source.is_hydra, tasks, train, val)
    metric = base["evaluation_metrics"].get("primary_metric")
    if not metric:
        raise PruneError(f"task config {tasks[-1]} sets no evaluation_metrics.primary_metric (e.g. forces_mae)")
    rule = parse_budget(budget, metric)
    require_device(device)
    take_back = check_settings(out, settings)
    fairchem_args = (["--cpu"] if device == "cpu" else []) + list(fairchem_args or [])
    steps_per_epoch = math.ceil(train_size / int(base.get("optim", {}).get("batch_size", 1)))

    candidate_epochs = None if auto else settings.epochs

    def config_of(name: str, core: dict, epochs: int | None, what: str) -> Path:
        path = out / "configs" / f"{name}.yml"
        config = run_config(base, architecture, core, epochs, steps_per_epoch)
        write_config(config, path,
                     f"fairchem-prune compress: {what}, {_length(config, epochs)} of {', '.join(map(str, tasks))}\n"
                     f"with {architecture.finetune_recipe}; train {train}, val {val}",
                     started=(out / "logs" / f"{name}.log").exists())
        return path

    reference = FairchemRun(f"full_{b}b", config_of(f"full_{b}b", {"pretrained_checkpoint": str(checkpoint.resolve()),
                                                                   "kept_blocks": list(range(b))}, candidate_epochs,
                                                    f"all {b} blocks of {checkpoint.name}"),
                            out / "runs", out / "logs" / f"full_{b}b.log")
    relevance_path = out / "relevance.json"
    check = not reference.finished and not reference.submitted_marker.exists()
    score = settings.order == "relevance" and not relevance_path.exists()
    if check or score:
        try:
            _inspect(reference, device, base["outputs"] if check else None, relevance_path if score else None,
                     architecture.label, settings)
        except BaseException:  # refused (the task) or interrupted before any training: --out as it was
            take_back()
            raise
    relevance = json.loads(relevance_path.read_text()) if settings.order == "relevance" else None
    if relevance is not None and not (out / "relevance.png").exists():
        from fairchem_prune.relevance import plot_relevance

        plot_relevance(relevance, out / "relevance.png")
    kept = _kept_blocks(settings, relevance, architecture.removable_block_names(source.source_blocks), counts)

    candidates = []
    for k in counts:
        c = Candidate(f"br_{k}b", k, kept[k], False, checkpoint)
        c.run = FairchemRun(c.name, config_of(c.name, c.core(), candidate_epochs, f"blocks {kept[k]} of {checkpoint.name}"),
                            out / "runs", out / "logs" / f"{c.name}.log")
        candidates.append(c)
    if settings.distill:
        candidates += _distilled(settings, out, checkpoint, architecture, counts, kept, config_of)

    # training, in the order the runs depend on each other
    first = [reference] + [c.run for c in candidates if not c.distilled] + [c.distill_run for c in candidates if c.distilled]
    if not _launch(first, fairchem_args, workers, submit):
        return None
    for c in candidates:
        if c.distilled:
            _export(c.distill_run.best_checkpoint, c.start)
            c.run = FairchemRun(c.name, config_of(c.name, c.core(), candidate_epochs, f"the student of {c.distill_run.name}"),
                                out / "runs", out / "logs" / f"{c.name}.log")
    if not _launch([c.run for c in candidates if c.distilled], fairchem_args, workers, submit):
        return None

    # errors, cost, pick
    exported = out / f"reference_{b}b.pt"
    _export(reference.best_checkpoint, exported)
    bench = _stage(out / "benchmark.json", lambda: _benchmark(exported, val, [b, *counts], device))
    models = [{"name": reference.name, "blocks": b, "kept": list(range(b)), "distilled": False, "run": reference}]
    models += [{"name": c.name, "blocks": c.blocks, "kept": c.kept, "distilled": c.distilled, "run": c.run} for c in candidates]
    for model in models:
        run = model.pop("run")
        scores = best_metrics(run)
        model.update(error=scores[metric], efwt=scores.get(LEADERBOARD_METRIC), checkpoint=str(run.best_checkpoint))
        if auto:
            model["trained"] = _trained(run)
    rows = report.candidate_rows(models, _cost(bench))
    sample = run_config(base, architecture, {}, candidate_epochs, steps_per_epoch)  # the candidates' schedule
    result = {"settings": asdict(settings), "architecture": architecture.name, "metric": metric, "budget": budget,
              "limit": rule.limit(rows[0]["error"]), "reference": rows[0], "candidates": rows[1:], "pick": None, "final": None,
              "benchmark_on": "the validation structures", "loads_in": "fairchem's OCPCalculator and `--mode predict`",
              "task": f"{', '.join(f'`{t}`' for t in settings.tasks)}; train `{settings.train}`, val `{settings.val}`",
              "length": _length(sample, candidate_epochs), "error_is": "best validation"}
    if auto:
        result["stop_rule"] = _stop_rule(sample)
    chosen = report.record_pick(out, result, rule, _say, by=pick)

    # the final fine-tune of the pick
    winner = next(c for c in candidates if c.name == chosen["name"])
    epochs = final_epochs or (None if auto else int(base.get("optim", {}).get("max_epochs", settings.epochs)))
    name = f"final_{winner.name}_{AUTO if epochs is None else f'e{epochs}'}"
    final = FairchemRun(name, config_of(name, winner.core(), epochs, f"the pick {winner.name}, fine-tuned to the end"),
                        out / "runs", out / "logs" / f"{name}.log")
    if not _launch([final], fairchem_args, workers, submit):
        return None
    target = out / f"compressed_{winner.name}.pt"
    _export(final.best_checkpoint, target)
    result["final"] = {"run": name, "epochs": epochs,
                       "length": _trained(final) if epochs is None else f"{epochs:g} epochs",
                       "checkpoint": str(target), "error": best_metrics(final)[metric]}
    report.write_outputs(out, result)
    _say(f"done: {target} ({metric} {result['final']['error']:.4g}); {out / 'report.md'}")
    return result


def _length(config: dict, epochs: int | None) -> str:
    """How long a run of ``config`` trains, in words: ``epochs`` epochs, or up to its cap, to its plateau
    (``epochs`` None)."""
    return f"{epochs:g} epochs" if epochs is not None else f"up to {config['optim']['max_epochs']:g} epochs, to a plateau"


def _stop_rule(config: dict) -> str:
    """The plateau rule of ``config`` (``optim.plateau``), in words."""
    plateau = Plateau.from_optim(config["optim"])
    return (f"a run stops once its best validation error improves by less than {100 * plateau.tolerance:g}% over the "
            f"last {100 * plateau.window:g}% of its epochs, not before epoch {plateau.min_epochs:g}")


def _trained(run: FairchemRun) -> str:
    """How long a run stopped on a plateau trained, e.g. "23.5 epochs (plateau)" or "40 epochs (cap)"."""
    epochs, stopped = trained_epochs(run.checkpoint_dir)
    return f"{epochs:g} epochs ({'plateau' if stopped else 'cap'})"


def best_metrics(run: FairchemRun) -> dict[str, float]:
    """The validation metrics (name -> value) that fairchem stored with the run's best checkpoint."""
    import torch

    checkpoint = torch.load(run.best_checkpoint, map_location="cpu", weights_only=False)
    return {name: float(value["metric"]) for name, value in checkpoint["val_metrics"].items()}


def _cost(bench: dict) -> dict[int, dict]:
    """Block count -> the cost fields of :func:`report.candidate_rows`, from ``benchmark.json``."""
    return {row["blocks"]: {"samples_per_s": row["samples_per_s"], "speedup": row["measured_speedup"],
                            "flop_bound": row["flop_bound_speedup"], "params": row["params"],
                            "gflops_per_sample": row["gflops_per_sample"], "peak_memory_mb": row["peak_memory_mb"],
                            "flags": row.get("flags", [])}
            for row in bench["rows"]}


def _dataset_size(path: Path, option: str) -> int:
    from fairchem_prune.datasets.lmdb_io import lmdb_files, open_lmdb_dataset

    lmdb_files(path, option)
    return len(open_lmdb_dataset(path))


def _stage(path: Path, compute) -> dict:
    """:func:`~fairchem_prune.files.json_stage`, saying when it was found."""
    if path.exists():
        _say(f"{path.name}: found, skipped")
    return json_stage(path, compute)[0]


@contextlib.contextmanager
def _probe(run: FairchemRun, device: str):
    """fairchem's trainer of ``run``'s config, built here without training (its files in a scratch
    folder in the system's temporary folder, never in ``--out``, removed after; fairchem's INFO logging
    and its progress bars silenced)."""
    import contextlib
    import io
    import logging
    import shutil
    import tempfile
    import warnings

    from fairchem_prune.fairchem_runs import build_trainer

    scratch = Path(tempfile.mkdtemp(prefix="fairchem_prune_probe_"))
    args = ["--mode", "train", "--config-yml", str(run.config), "--run-dir", str(scratch), "--timestamp-id", "probe"]
    logging.disable(logging.WARNING)  # the config, the missing metadata.npz, the sampler
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.load(weights_only=False) in fairchem
            with contextlib.redirect_stderr(io.StringIO()):  # fairchem's bar while it fits the normalizers
                trainer = build_trainer(args + (["--cpu"] if device == "cpu" else []))
            yield trainer
    finally:
        logging.disable(logging.NOTSET)
        shutil.rmtree(scratch, ignore_errors=True)


def _inspect(reference: FairchemRun, device: str, outputs: dict | None, relevance: Path | None, label: str,
             settings: CompressSettings) -> None:
    """With the reference's trainer built here: check that it gives the task's ``outputs``, and write
    the block ``relevance``. The trainer and its open datasets are released before this returns or
    raises (a PruneError, Ctrl-C), so that the same process may open the data again."""
    import gc
    import traceback

    try:
        with _probe(reference, device) as trainer:
            if outputs is not None:
                _check_task(trainer, outputs, label, settings.checkpoint)
            if relevance is not None:
                _stage(relevance, functools.partial(_relevance, trainer, settings))
    except BaseException as err:
        traceback.clear_frames(err.__traceback__)  # its frames hold the trainer
        raise
    finally:
        trainer = None
        gc.collect()


def _check_task(trainer, outputs: dict, label: str, checkpoint: str) -> None:
    """The reference model gives every output the task trains on, on the task's first training structures."""
    import torch
    from fairchem.core.datasets import data_list_collater

    dataset = trainer.train_dataset
    batch = data_list_collater([dataset[i] for i in range(min(2, len(dataset)))], otf_graph=True).to(trainer.device)
    with torch.enable_grad():
        given = set(trainer.model(batch))
    if not set(outputs) <= given:
        raise PruneError(f"the task asks for {sorted(set(outputs) - given)} but the {label} model of {checkpoint} with "
                         f"this recipe gives {sorted(given)}; give a task of these outputs (or set the model keys that "
                         "add them, e.g. regress_forces: true)")


def _kept_blocks(settings: CompressSettings, relevance: dict | None, names: list[str], counts: list[int]) -> dict[int, list[int]]:
    """The checkpoint's blocks (relevance ``names``, one per block) each count keeps: the first k
    (``last``), or the k most relevant in their order (``relevance``)."""
    if settings.order == "last":
        return kept_for_counts(counts)
    combined = dict(zip(relevance["blocks"], relevance["datasets"]["train"]["combined"]))
    return kept_for_counts(counts, [combined[name] for name in names])


def _relevance(trainer, settings: CompressSettings) -> dict:
    """GradCAM relevance (:mod:`fairchem_prune.relevance`) of the pre-trained model in the reference's
    trainer (the task's loss, normalizers and training data), as ``relevance.json`` holds it."""
    import numpy as np

    from fairchem_prune.relevance import block_names, relevance_of_samples, scores_from_raw

    _say(f"relevance: GradCAM on {settings.relevance_samples} training structures")
    dataset = trainer.train_dataset
    order = np.random.default_rng(settings.seed).permutation(len(dataset))[:settings.relevance_samples]
    raw = relevance_of_samples(trainer, dataset, order.tolist(), progress=True, desc="relevance")
    return {"blocks": block_names(trainer.model), "datasets": {"train": {**scores_from_raw(raw), "num_samples": len(order)}}}


def _distilled(settings, out, checkpoint, architecture, counts, kept, config_of) -> list[Candidate]:
    """``kd_<k>b`` candidates: ``trainer: distill`` (the architecture's distillation config) of the kept
    blocks from the full model on ``settings.distill`` (one validation, on ``--val``, at the end), then
    fine-tuned like the others."""
    from fairchem.core.common.utils import load_config

    from fairchem_prune.resources import config_path

    data = Path(settings.distill)
    samples = settings.distill_samples or _dataset_size(data, "--distill")
    distill_base = config_path(architecture.distill_config)
    form = {"name": load_config(str(distill_base))[0]["model"].get("name")}
    batch = int(load_config(str(distill_base))[0].get("optim", {}).get("batch_size", 8))
    steps = math.ceil(samples / batch)
    result = []
    for k in counts:
        name = f"distill_{k}b"
        path = out / "configs" / f"{name}.yml"
        write_config({
            "includes": [str(distill_base)],
            "dataset": {"train": {"src": str(data.resolve())}, "val": {"src": str(Path(settings.val).resolve())}},
            "task": {"distill": {"teacher_checkpoint": str(checkpoint.resolve()), "max_samples": samples}},
            "model": architecture.with_core(form, {"kept_blocks": kept[k]}),
            "optim": {"T_max": steps, "eval_every": steps, "print_every": max(1, steps // 10)},
        }, path, f"fairchem-prune compress: distillation of blocks {kept[k]} of {checkpoint.name} on {data}",
            started=(out / "logs" / f"{name}.log").exists())
        run = FairchemRun(name, path, out / "runs", out / "logs" / f"{name}.log", args=("--seed", str(settings.seed)))
        result.append(Candidate(f"kd_{k}b", k, kept[k], True, out / "students" / f"kd_{k}b.pt", distill_run=run))
    return result


def _launch(runs: list[FairchemRun], fairchem_args: list[str], workers: int, submit: bool) -> bool:
    """Train the unfinished runs here (True when all are done), or submit the ones not yet submitted
    and report the others' state (True only when every run has finished)."""
    if not submit:
        train_all(runs, fairchem_args, workers, say=_say)
        return True
    waiting = []
    for run in runs:
        state = run.slurm_state()
        if state == "done":
            _say(f"{run.name}: Slurm job {run.submitted_marker.read_text().strip()} finished")
        if run.finished:
            continue
        if state is None:
            job = run.submit(fairchem_args)
            _say(f"{run.name}: submitted (Slurm job {job}; log {run.log})")
            waiting.append(run.name)
        elif state in ("failed", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            raise PruneError(f"Slurm job of run {run.name} ended {state}; see {run.run_dir / 'slurm'} and {run.log}, "
                             f"then delete {run.submitted_marker} to submit it again")
        else:
            _say(f"{run.name}: Slurm job {run.submitted_marker.read_text().strip()} is {state}")
            waiting.append(run.name)
    if waiting:
        _say(f"waiting for {len(waiting)} run(s): {', '.join(waiting)}; run the same command again when they end")
    return not waiting


def _export(checkpoint: Path, target: Path) -> None:
    """A self-contained copy of a run's best checkpoint (EMA weights baked in), made again only when the
    run's checkpoint is newer (a longer final run)."""
    from fairchem_prune.slicing import slice_checkpoint

    if target.exists() and target.stat().st_mtime_ns >= checkpoint.stat().st_mtime_ns:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    slice_checkpoint(checkpoint, target, force=True)


def _benchmark(model: Path, data: Path, blocks: list[int], device: str) -> dict:
    from fairchem_prune.benchmark import run_benchmark

    _say(f"benchmark: {blocks} blocks on {data}")
    return run_benchmark(model, data, blocks=blocks, device=device, repeats=3, finetune_repeats=0, forces="config")
