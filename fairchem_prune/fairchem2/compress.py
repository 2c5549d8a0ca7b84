"""``fairchem-prune compress`` beside fairchem-core 2.x: from a UMA / eSEN inference checkpoint to the
fastest model whose validation error on the user's fine-tuning data stays within a budget of the full
model's, with fairchem 2's own fine-tuning flow.

The task is the fine-tuning template fairchem's ``create_uma_finetune_dataset.py`` wrote (its data
YAML: ASE-LMDB train / val data, tasks, normaliser, element references).

1. ``relevance``  (``--order relevance``) GradCAM relevance of the checkpoint's blocks under the task's
                  loss on its training structures -> ``relevance.json``, ``relevance.png``; a k-block
                  candidate keeps the k most relevant blocks (``--order last``: the first k)
2. candidates     the full model (the reference) and each block count, sliced, then fine-tuned by
                  ``fairchem -c`` for the same ``--steps`` / ``--epochs`` (:mod:`.runs`) -> ``checkpoints/``,
                  ``configs/``, ``runs/``, ``logs/``; with ``--distill TEMPLATE`` also each count
                  distilled from the full model on the pre-training structures of TEMPLATE
                  (:mod:`.distill`: ``runs/distill_<k>b``), then fine-tuned the same way (``kd_<k>b``)
3. ``benchmark``  throughput, FLOP bound, parameters, peak memory per block count on the built-in
                  systems (:mod:`.benchmark`, experts merged where the model has them) -> ``benchmark.json``
4. pick           of the candidates whose last validation error is within ``--budget`` of the
                  reference's, the fewest blocks (``--pick fewest``) or the highest throughput not
                  flagged by the benchmark (``--pick fastest``; :mod:`fairchem_prune.compress.budget`)
                  -> ``compress.json``, ``report.md``, ``pareto.png``
5. final          the pick fine-tuned to the end (``--final-steps`` / ``--final-epochs``, default: the
                  template's) -> ``compressed_<candidate>.pt``, a fairchem 2 inference checkpoint

A re-run skips every finished step and resumes an interrupted run; other settings in an existing
``--out`` are refused in one line (a different ``--budget`` re-picks from the recorded runs).
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from fairchem_prune.blocks import kept_for_counts
from fairchem_prune.compress import report
from fairchem_prune.compress.budget import PICKS, parse_budget
from fairchem_prune.compress.workdir import block_counts, check_settings
from fairchem_prune.errors import PruneError, require_device
from fairchem_prune.fairchem2 import escn_md
from fairchem_prune.fairchem2.runs import FinetuneRun, prepare, train_all
from fairchem_prune.files import json_stage

ORDERS = ("relevance", "last")


@dataclass(frozen=True)
class CompressSettings:
    """What defines the candidates: a re-run with other values needs another ``--out``."""

    checkpoint: str
    template: str
    steps: int | None = None             #: fine-tuning steps of every candidate (or epochs)
    epochs: int | None = None
    blocks: list[int] | None = None      #: block counts to try (default: every count below the checkpoint's)
    order: str = "relevance"
    task: str | None = None              #: the dataset whose loss relevance uses (default: the template's)
    relevance_samples: int = 200
    batch_size: int | None = None
    lr: float | None = None
    ema_decay: float | None = None
    seed: int = 0
    distill: str | None = None           #: template of the pre-training structures of the kd_ candidates
    distill_samples: int | None = None   #: structures each distillation sees (default: one pass over them)


def _say(message: str) -> None:
    print(f"[compress] {message}", flush=True)


def metric_kind(metric: str) -> str:
    """``omat.val,forces,mae`` -> ``forces_mae``: the name the budget's unit check reads."""
    parts = metric.split(",")
    return "_".join(parts[-2:]) if len(parts) >= 3 else metric


def template_data(template: Path, split: str = "train") -> tuple[str, Path]:
    """(dataset name, ``split`` data: ``train`` or ``val``) of the data YAML ``template`` includes;
    relative paths are taken from the current folder (where create_uma_finetune_dataset.py ran) or the
    template's."""
    from fairchem_prune.fairchem2.finetune import data_sources, read_template

    config = read_template(template)
    datasets = list((config.get("train_dataset") or {}).get("dataset_configs") or {})
    sources = data_sources(template, split)
    if not datasets or not sources:
        raise PruneError(f"fine-tuning template {template} names no {split} data ({split}_dataset.dataset_configs and "
                         f"a data YAML with {split}_dataset.splits.{split}.src)")
    source = Path(sources[0])
    for candidate in (source, template.parent / source):
        if candidate.exists():
            return datasets[0], candidate.resolve()
    raise PruneError(f"the training data {source} of {template} does not exist (from here or from {template.parent})")


def run_compress(settings: CompressSettings, out: str | Path, budget: str, final_steps: int | None = None,
                 final_epochs: int | None = None, device: str = "cpu", benchmark_repeats: int = 3,
                 pick: str = "fewest") -> dict:
    """Run or continue every step (see the module docstring), picking by the rule ``pick``
    (:data:`~fairchem_prune.compress.budget.PICKS`); returns ``compress.json``'s content."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint, resolve_path, source_blocks

    out = Path(out)
    parse_budget(budget, None)  # the unit is checked against the metric once the runs report it
    checkpoint, template = resolve_path(settings.checkpoint), Path(settings.template)
    if settings.order not in ORDERS:
        raise PruneError(f"--order must be one of {ORDERS}, got {settings.order!r}")
    if pick not in PICKS:
        raise PruneError(f"--pick must be one of {', '.join(PICKS)}, got {pick!r}")
    if (settings.steps is None) == (settings.epochs is None):
        raise PruneError("give the candidates' fine-tuning length: --steps or --epochs (one of them)")
    for name, value in (("--steps", settings.steps), ("--epochs", settings.epochs), ("--final-steps", final_steps),
                        ("--final-epochs", final_epochs)):
        if value is not None and value < 1:
            raise PruneError(f"{name} must be at least 1, got {value}")
    if final_steps is not None and final_epochs is not None:
        raise PruneError("give --final-steps or --final-epochs, not both")
    dataset, train = template_data(template)
    task = settings.task or dataset
    distill = _distill_settings(settings, template, checkpoint)
    source = read_inference_checkpoint(checkpoint)
    b = escn_md.num_blocks(source.model_config, f"checkpoint {checkpoint}")
    counts = block_counts(settings.blocks, b)
    require_device(device)
    check_settings(out, settings)
    finetune = {"steps": settings.steps, "epochs": settings.epochs, "batch_size": settings.batch_size,
                "lr": settings.lr, "ema_decay": settings.ema_decay, "device": device}

    # 1. which blocks each count keeps
    names = [f"b_{k}" for k in source_blocks(source, b)]
    relevance = None
    if settings.order == "relevance":
        relevance = _stage(out / "relevance.json", lambda: _relevance(checkpoint, train, task, settings),
                           {out / "relevance.png": _plot_relevance})
        scores = dict(zip(relevance["blocks"], relevance["datasets"]["train"]["combined"]))
        kept = kept_for_counts(counts, [scores[n] for n in names])
    else:
        kept = kept_for_counts(counts)

    # 2. the candidates' fine-tunes
    reference = FinetuneRun.under(out, f"full_{b}b", list(range(b)))
    candidates = [FinetuneRun.under(out, f"br_{k}b", kept[k]) for k in counts]
    runs = [reference, *candidates]
    prepare(runs, template, checkpoint, say=_say, **finetune)
    students = [FinetuneRun.under(out, f"distill_{c.name[3:]}", c.kept_blocks, start=c.checkpoint)
                for c in candidates] if distill else []
    if students:
        prepare(students, distill["template"], checkpoint, say=_say, **{**finetune, **distill["run"]})
    train_all([*runs, *students], say=_say)
    distilled = [FinetuneRun.under(out, f"kd_{c.name[3:]}", c.kept_blocks, start=s.paths.final_checkpoint)
                 for c, s in zip(candidates, students)]
    prepare(distilled, template, checkpoint, say=_say, **finetune)
    train_all(distilled, say=_say)

    # 3. cost; 4. pick
    bench = _stage(out / "benchmark.json", lambda: _benchmark(checkpoint, [b, *counts], device, benchmark_repeats))
    metric = _metric(reference)
    rule = parse_budget(budget, metric_kind(metric))
    models = [_model(run, metric, distilled=False) for run in runs] + [_model(run, metric, True) for run in distilled]
    rows = report.candidate_rows(models, _cost(bench))
    result = {"settings": asdict(settings), "architecture": escn_md.LABEL, "metric": metric, "budget": budget,
              "limit": rule.limit(rows[0]["error"]), "reference": rows[0], "candidates": rows[1:], "pick": None,
              "final": None, "benchmark_on": _systems(bench), "loads_in": "fairchem's load_predict_unit / FAIRChemCalculator",
              "task": f"`{template}` ({task}; fairchem's create_uma_finetune_dataset.py data)",
              "length": _length(settings.steps, settings.epochs) or "the template's length",
              "error_is": "last validation (fairchem's, EMA weights)",
              "distillation": _distillation_record(distill, students) if distill else None}
    if distill:
        result["distilled_on"] = _distilled_on(result["distillation"])
    chosen = report.record_pick(out, result, rule, _say, hint="or fine-tune the candidates longer (--steps / --epochs)",
                                by=pick)

    # 5. the final fine-tune of the pick
    winner = next(run for run in [*candidates, *distilled] if run.name == chosen["name"])
    length = ({"steps": final_steps} if final_steps else {"epochs": final_epochs} if final_epochs else {})
    suffix = f"_s{final_steps}" if final_steps else f"_e{final_epochs}" if final_epochs else ""
    final = FinetuneRun.under(out, f"final_{winner.name}{suffix}", winner.kept_blocks,
                              start=None if winner.sliced else winner.checkpoint)
    prepare([final], template, checkpoint, say=_say, **{**finetune, "steps": None, "epochs": None, **length})
    train_all([final], say=_say)
    target = out / f"compressed_{winner.name}.pt"
    if not target.exists() or target.stat().st_mtime_ns < final.paths.final_checkpoint.stat().st_mtime_ns:
        shutil.copyfile(final.paths.final_checkpoint, target)
    result["final"] = {"run": final.name, "length": _length(final_steps, final_epochs) or "the template's length",
                       "checkpoint": str(target), "error": _model(final, metric, False)["error"]}
    report.write_outputs(out, result)
    _say(f"done: {target} ({metric} {result['final']['error']:.4g}); {out / 'report.md'}")
    return result


def _distill_settings(settings: CompressSettings, template: Path, checkpoint: Path) -> dict | None:
    """With ``--distill``: its template, the distillations' run settings (``distill``: a
    :class:`~fairchem_prune.fairchem2.distill.DistillSettings` of the full model as the teacher; the
    steps that see ``distill_samples`` structures, one pass over the template's training structures by
    default, with a validation at the end) and the number of structures."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint
    from fairchem_prune.fairchem2.data import dataset_size
    from fairchem_prune.fairchem2.distill import DistillSettings, budget_steps
    from fairchem_prune.fairchem2.finetune import config_value, read_template

    if settings.distill is None:
        if settings.distill_samples is not None:
            raise PruneError("--distill-samples needs --distill (the pre-training structures)")
        return None

    distill = Path(settings.distill)
    dataset, train = template_data(distill)
    known = sorted({d for task in read_inference_checkpoint(checkpoint).tasks_config for d in task.get("datasets", [])})
    if dataset not in known:
        raise PruneError(f"--distill {distill}: its structures are {dataset}, which the full model has no task for; "
                         f"give structures of one of its datasets ({', '.join(known)})")
    _, val = template_data(template, "val")
    if train == val:
        raise PruneError(f"--distill {distill} trains on {train}, the task's validation data; give a template of "
                         "pre-training structures")
    samples = dataset_size(train) if settings.distill_samples is None else settings.distill_samples
    if samples < 1:
        raise PruneError(f"--distill-samples must be at least 1, got {samples}")
    batch = settings.batch_size or config_value(read_template(distill), "batch_size")
    if not isinstance(batch, int):
        raise PruneError(f"the batch size of {distill} is {batch!r}, not a number; give --batch-size")
    steps = budget_steps(samples, batch)
    return {"template": distill, "samples": samples, "steps": steps,
            "run": {"steps": steps, "epochs": None, "distill": DistillSettings(teacher=checkpoint)}}


def _distillation_record(distill: dict, students: list[FinetuneRun]) -> dict:
    """What the report says of the distillations: their data and length, and each student's last
    validation against the teacher (the distillation gap, fairchem's metrics)."""
    return {"template": str(distill["template"]), "samples": distill["samples"], "steps": distill["steps"],
            "gap": {run.name: run.last_validation() for run in students}}


def _distilled_on(record: dict) -> str:
    """The report's sentence on the distillations."""
    from fairchem_prune.fairchem2.ablation import default_metric
    from fairchem_prune.fairchem2.finetune import metric_values

    gaps = []
    for name, last in record["gap"].items():
        if last:
            metric = default_metric(metric_values(last))
            gaps.append(f"{name} {metric} {last[metric]:.4g}")
    return (f"distilled from the full model on the structures of `{record['template']}` ({record['samples']} "
            f"structures, {record['steps']} steps; the teacher's energies, forces and stress as targets plus "
            "node-to-node L1, fairchem-prune's DistillTrainEvalUnit), then fine-tuned as the others"
            + (f"; each student's last validation against the teacher: {', '.join(gaps)}" if gaps else "") + ".")


def _length(steps: int | None, epochs: int | None) -> str | None:
    return f"{steps} steps" if steps else f"{epochs} epochs" if epochs else None


def _stage(path: Path, compute, figures: dict | None = None) -> dict:
    if path.exists():
        _say(f"{path.name}: found, skipped")
    return json_stage(path, compute, figures=figures)[0]


def _plot_relevance(result: dict, path: Path) -> None:
    from fairchem_prune.gradcam import plot_relevance

    plot_relevance(result, path)


def _relevance(checkpoint: Path, train: Path, task: str, settings: CompressSettings) -> dict:
    from fairchem_prune.fairchem2.relevance import block_relevance

    _say(f"relevance: GradCAM of {checkpoint.name} for {task} on {settings.relevance_samples} training structures")
    return block_relevance(checkpoint, [train], task, names=["train"], num_samples=settings.relevance_samples,
                           seed=settings.seed)


def _metric(reference: FinetuneRun) -> str:
    """The forces MAE of the task's validation (else its energy MAE), as fairchem names it."""
    from fairchem_prune.fairchem2.ablation import default_metric
    from fairchem_prune.fairchem2.finetune import metric_values

    last = reference.last_validation()
    if not last:
        raise PruneError(f"run {reference.name} recorded no validation ({reference.paths.metrics}); see {reference.log}")
    metric = default_metric(metric_values(last))
    if metric == "loss":
        raise PruneError(f"the validation of {reference.name} has no forces or energy MAE ({sorted(last)})")
    return metric


def _model(run: FinetuneRun, metric: str, distilled: bool) -> dict:
    last = run.last_validation()
    if not last or metric not in last:
        raise PruneError(f"run {run.name} recorded no validation {metric} ({run.paths.metrics}); see {run.log}")
    return {"name": run.name, "blocks": len(run.kept_blocks), "kept": run.kept_blocks, "distilled": distilled,
            "error": float(last[metric]), "checkpoint": str(run.paths.final_checkpoint)}


def _benchmark(checkpoint: Path, blocks: list[int], device: str, repeats: int) -> dict:
    from fairchem_prune.fairchem2.benchmark import run_benchmark

    _say(f"benchmark: {blocks} blocks of {checkpoint.name}")
    return run_benchmark(checkpoint, blocks=blocks, device=device, repeats=repeats)


def _mode(bench: dict) -> str:
    """The expert mode the throughput is read from: merged where measured (what MD runs), else MoLE."""
    return "merged" if "merged" in bench["settings"]["modes"] else bench["settings"]["modes"][0]


def _cost(bench: dict) -> dict[int, dict]:
    """Block count -> the cost fields of :func:`fairchem_prune.compress.report.candidate_rows`."""
    mode = _mode(bench)
    return {row["blocks"]: {"samples_per_s": row[mode]["structures_per_s"], "speedup": row[mode]["measured_speedup"],
                            "flop_bound": row[mode]["flop_bound_speedup"], "params": row["params"],
                            "gflops_per_sample": row[mode]["gflops_per_structure"],
                            "peak_memory_mb": row[mode]["peak_memory_mb"], "flags": row[mode].get("flags", [])}
            for row in bench["rows"]}


def _systems(bench: dict) -> str:
    systems = ", ".join(f"{s['name']} ({s['natoms']} atoms, {s['task']})" for s in bench["settings"]["systems"])
    return f"{systems}, experts {_mode(bench)}"
