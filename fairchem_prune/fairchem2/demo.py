"""``fairchem-prune demo`` beside fairchem-core 2.x: the paper's study, end to end, on a small
UMA-architecture teacher and the embedded demo data, with fairchem 2's own training
(``fairchem -c``), inference (``load_predict_unit``, ``FAIRChemCalculator``) and metrics (``Evaluator``).

Stages, each kept under ``--out`` and skipped when its result exists (``--force`` redoes them all;
interrupted training runs resume from fairchem's own checkpoints):

1. ``data``       the demo mix as ASE-LMDB, the xTB molecules as task omol and the EMT slabs as oc20
                  (cached in ``~/.cache/fairchem-prune/demo_data/``), and the ethanol task (omol) with
                  its fine-tuning template -> ``data/ethanol/``
2. ``teacher``    the 6-block UMA-architecture model pre-trained on the mix
                  (``configs/fairchem2/demo/demo_mix_teacher_6b.yaml``): shipped, ``--teacher``, or
                  trained -> ``teacher.pt``, ``teacher.json``, ``teacher_curve.png``
3. ``relevance``  GradCAM block relevance per source, each under its own task's loss -> ``relevance.json``,
                  ``relevance.png``
4. ``reduction``  BR to b-1 .. b-k blocks (the first blocks kept), BR+KD (fairchem-prune's
                  ``DistillTrainEvalUnit`` on the mix, the teacher's energies and forces plus node-to-node)
                  -> ``reduction/``, ``reduction.json`` (force / energy error and EFwT per source: Table 1)
5. ``finetune``   the teacher, BR and BR+KD models fine-tuned on ethanol for the same number of epochs with
                  fairchem's UMA fine-tuning template -> ``finetune/``, ``finetune.json``, ``finetune.png``
                  (Fig. 3), ``finetune_curves.png`` (Fig. 4)
6. ``md``         NVE dynamics (``FAIRChemCalculator``) of the fine-tuned models -> ``md.json``, ``md.png``
7. ``benchmark``  speed, FLOP bound, parameters, memory per block count -> ``benchmark.json`` (Table 2)
8. ``report``     ``report.md`` with every table and figure, and the tables printed
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.console import chatter_to
from fairchem_prune.demo import check_settings, say, stage
from fairchem_prune.demo.generation import SIZES, DemoSize
from fairchem_prune.errors import require_device
from fairchem_prune.fairchem2.demo_data import ETHANOL_TASK, SOURCE_TASKS


#: the benchmark's systems: the teacher knows the tasks omol and oc20
BENCH_SYSTEMS = ("cu111_oh", "cu111_co")


@dataclass(frozen=True)
class DemoSettings:
    quick: bool
    data_size: str                        #: cache name of the demo data
    data_spec: DemoSize
    ethanol_sizes: tuple[int, int, int]   #: train / val / test frames of the downstream task
    teacher_epochs: int | None            #: of a teacher trained here (None: the config's)
    relevance_samples: int                #: per source
    score_samples: int                    #: validation structures per source that Table 1 scores
    reductions: int                       #: how many block counts below the teacher's
    kd_samples: int                       #: structures seen by each distillation
    kd_batch_size: int
    ft_epochs: int
    ft_batch_size: int
    ft_blocks: tuple[int, ...]            #: the reduced block counts fine-tuned (with the teacher)
    md_steps: int
    bench_repeats: int
    #: learning rates and EMA decays (fairchem's default 0.999 averages over ~1000 steps: the EMA weights a
    #: run of a few hundred steps saves would still be mostly its starting point's)
    kd_lr: float = 1e-3                   #: a quarter of the teacher's
    kd_ema_decay: float = 0.9
    ft_lr: float = 2e-3
    ft_ema_decay: float = 0.95


FULL = DemoSettings(quick=False, data_size="standard", data_spec=SIZES["standard"], ethanol_sizes=(200, 50, 200),
                    teacher_epochs=None, relevance_samples=50, score_samples=100, reductions=4, kd_samples=384,
                    kd_batch_size=8, ft_epochs=4, ft_batch_size=8, ft_blocks=(4,), md_steps=200, bench_repeats=3)
QUICK = DemoSettings(quick=True, data_size="quick",
                     data_spec=DemoSize(g2_frames=2, slabs=40, rmd17_frames=100, md22_frames=2, qm9_conformers=1,
                                        g2_molecules=20),
                     ethanol_sizes=(40, 16, 24), teacher_epochs=2, relevance_samples=8, score_samples=16, reductions=2,
                     kd_samples=32, kd_batch_size=8, ft_epochs=1, ft_batch_size=8, ft_blocks=(4,), md_steps=20,
                     bench_repeats=1)


def run_demo(out: str | Path = "demo_out", quick: bool = False, force: bool = False, device: str = "cpu",
             data: str | Path | None = None, teacher: str | Path | None = None, train_teacher: bool = False) -> dict:
    """Run every stage (see the module docstring); returns ``{"reduction", "finetune", "benchmark",
    "findings"}`` as written to the JSON files."""
    require_device(device)
    settings = QUICK if quick else FULL
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, {"quick": quick, "data": str(Path(data).resolve()) if data else None,
                         "teacher": str(Path(teacher).resolve()) if teacher else None, "train_teacher": train_teacher,
                         "host": "fairchem2"}, force)
    if force:
        for folder in ("reduction", "finetune"):
            shutil.rmtree(out / folder, ignore_errors=True)
    (out / "logs").mkdir(exist_ok=True)
    with chatter_to(out / "logs" / "demo.log"):  # fairchem's logging (warnings at every model load)
        return _stages(out, settings, data, teacher, train_teacher, force, device)


def _stages(out: Path, settings: DemoSettings, data, teacher, train_teacher: bool, force: bool, device: str) -> dict:
    from fairchem_prune.demo import report
    from fairchem_prune.fairchem2.demo_data import ethanol_task, mix_data
    from fairchem_prune.fairchem2.demo_teacher import teacher_stage
    from fairchem_prune.gradcam import plot_relevance
    from fairchem_prune.md_check import format_table as md_table
    from fairchem_prune.md_check import plot_energies

    say(f"1/8 data{' (quick)' if settings.quick else ''}")
    mix = mix_data(data, settings.data_size, 0, say, settings.data_spec)
    ethanol = ethanol_task(mix, out / "data" / "ethanol", settings.ethanol_sizes, 0, force, say).parent

    say("2/8 teacher")
    teacher_path, record = teacher_stage(out, mix, settings.teacher_epochs, str(teacher) if teacher else None,
                                         train_teacher, device, force, say)
    if record.get("val_curve") and (force or not (out / "teacher_curve.png").exists()):
        report.plot_teacher_curve(record["val_curve"], out / "teacher_curve.png", record.get("curve_columns"))

    say("3/8 block relevance (GradCAM) per pre-training source, each under its task's loss")
    relevance = stage(out, "relevance", force, lambda: _relevance(teacher_path, mix, settings, device),
                      {"relevance.png": plot_relevance})
    table_rel = report.relevance_table(relevance)
    print("\nFig. 2 analogue: GradCAM block relevance per source:\n" + table_rel)

    b = record["blocks"]
    counts = list(range(b - 1, max(b - 1 - settings.reductions, 0), -1))
    say(f"4/8 block reduction to {counts} blocks, with and without distillation")
    reduced = stage(out, "reduction", force, lambda: _reduce(out, teacher_path, mix, counts, settings, device))
    table1 = report.reduction_table(b, counts, reduced["metrics"], reduced["params"])
    print("\nTable 1 analogue: validation force MAE (meV/Å) per pre-training source, gap to the teacher:\n" + table1)
    table_lb = report.leaderboard_table(b, counts, reduced["metrics"])
    print("\nThe same models in the S2EF leaderboard's terms:\n" + table_lb)

    tuned_blocks = [k for k in settings.ft_blocks if k in counts]
    say(f"5/8 fine-tuning the teacher and the BR, BR+KD models of {tuned_blocks} blocks on ethanol "
        f"({settings.ft_epochs} epochs each)")
    tuned = stage(out, "finetune", force,
                  lambda: _finetune(out, teacher_path, b, tuned_blocks, reduced, ethanol, settings, device),
                  {"finetune.png": lambda r, p: report.plot_finetune(r["rows"], p),
                   "finetune_curves.png": lambda r, p: report.plot_curves(r["rows"], p)})
    table_ft = report.finetune_table(tuned["rows"])
    print("\nFig. 3 analogue: ethanol test MAE after fine-tuning:\n" + table_ft)

    say(f"6/8 molecular dynamics of the fine-tuned models on ethanol ({settings.md_steps} NVE steps)")
    md = stage(out, "md", force, lambda: _md_check(out, tuned["rows"], ethanol, settings, device),
               {"md.png": plot_energies})
    table_md = md_table(md)
    print("\nMolecular dynamics (NVE) of the fine-tuned models:\n" + table_md)

    say("7/8 efficiency benchmark (Table 2 analogue)")
    bench = stage(out, "benchmark", force, lambda: _benchmark(teacher_path, [b, *counts], settings, device))
    from fairchem_prune.fairchem2.benchmark import format_table as bench_table

    table2 = bench_table(bench)
    print("\nTable 2 analogue:\n" + table2)

    say("8/8 report")
    checks = report.findings(relevance, counts, reduced["metrics"], tuned["rows"])
    report.write_report(out / "report.md", _sections(record, mix, settings, reduced, tuned, bench, {
        "relevance": table_rel, "reduction": table1, "leaderboard": table_lb, "finetune": table_ft, "md": table_md,
        "efficiency": table2}, checks))
    print("\nFindings:\n" + "\n".join(f"- {line}" for line in checks))
    say(f"done: {out / 'report.md'}")
    return {"reduction": reduced, "finetune": tuned, "benchmark": bench, "findings": checks}


def _val_structures(mix, count: int) -> dict:
    """``{source: (the first ``count`` validation structures, its task)}``."""
    from fairchem_prune.fairchem2.data import read_structures

    return {source: (read_structures(folder, count, task=SOURCE_TASKS[source]), SOURCE_TASKS[source])
            for source, folder in mix.split("val").items()}


def _scoring_mix(mix, folder: Path, count: int):
    """The demo mix with the first ``count`` validation structures of each source only
    (``folder/pretrain/val/<source>/``, ASE-LMDB; the training folders linked): what Table 1 scores and
    the distillations validate on (a validation of the whole split would take a distillation's time again)."""
    from fairchem_prune.fairchem2.data import read_structures
    from fairchem_prune.fairchem2.demo_data import DATABASE, MixData, write_aselmdb

    scored = MixData(folder, mix.manifest)
    if not (folder / "pretrain" / "train").exists():
        (folder / "pretrain").mkdir(parents=True, exist_ok=True)
        (folder / "pretrain" / "train").symlink_to((mix.root / "pretrain" / "train").resolve())
    for source, val in mix.split("val").items():
        target = scored.split("val")[source]
        if not (target / DATABASE).is_file():
            structures = read_structures(val, count, task=SOURCE_TASKS[source])
            write_aselmdb(target, structures, list(range(len(structures))), {}, force=True)
    return scored


def _relevance(teacher: Path, mix, settings: DemoSettings, device: str) -> dict:
    """GradCAM relevance of the teacher's blocks on each source's validation structures, under the loss
    of the source's task (:func:`~fairchem_prune.fairchem2.relevance.block_relevance`)."""
    from fairchem_prune.fairchem2.relevance import block_relevance

    result = None
    for source, folder in mix.split("val").items():
        one = block_relevance(teacher, [folder], SOURCE_TASKS[source], names=[source],
                              num_samples=settings.relevance_samples, device=device)
        if result is None:
            result = {**one, "task": SOURCE_TASKS}
        else:
            result["datasets"].update(one["datasets"])
    return result


def _reduce(out: Path, teacher: Path, mix, counts: list[int], settings: DemoSettings, device: str) -> dict:
    """BR (the teacher's first k blocks) and BR+KD (distilled on the mix) per count of ``counts``, each
    model scored on every source's validation structures."""
    from fairchem_prune.fairchem2.demo_teacher import architecture, write_mix_template
    from fairchem_prune.fairchem2.distill import DistillSettings
    from fairchem_prune.fairchem2.evaluation import evaluate_structures
    from fairchem_prune.fairchem2.runs import FinetuneRun, prepare, train_all
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    folder = out / "reduction"
    scored = _scoring_mix(mix, folder / "data", settings.score_samples)
    template = write_mix_template(scored, teacher, folder / "mix_template.yaml")
    sliced = {k: folder / "checkpoints" / f"br_{k}b.pt" for k in counts}
    for k, path in sliced.items():
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            slice_inference_checkpoint(teacher, path, num_blocks_kept=k, force=True)
    students = [FinetuneRun.under(folder, f"kd_{k}b", list(range(k)), start=path) for k, path in sliced.items()]
    distill = DistillSettings(teacher=teacher, samples=settings.kd_samples, sampling="temperature")
    prepare(students, template, teacher, say=lambda m: say(f"reduction: {m}"), distill=distill,
            batch_size=settings.kd_batch_size, lr=settings.kd_lr, ema_decay=settings.kd_ema_decay, device=device)
    train_all(students, say=lambda m: say(f"reduction: distillation {m}"))
    models = {"teacher": teacher, **{f"br_{k}b": path for k, path in sliced.items()},
              **{f"kd_{k}b": r.paths.final_checkpoint for k, r in zip(counts, students)}}
    data = _val_structures(scored, settings.score_samples)
    say(f"reduction: scoring {len(models)} models on {settings.score_samples} validation structures of "
        f"{', '.join(data)}")
    log = out / "logs" / "scoring.log"
    metrics = {name: evaluate_structures(path, data, device=device, log=log, desc=f"scoring {name}")
               for name, path in models.items()}
    return {"counts": counts, "seeds": 1, "checkpoints": {k: str(v) for k, v in models.items()},
            "scored": {source: len(structures) for source, (structures, _) in data.items()},
            "params": {name: architecture(path)["parameters"] for name, path in models.items() if not name.startswith("kd")},
            "distillation": {"samples": settings.kd_samples, "batch_size": settings.kd_batch_size,
                             "seconds": {r.name: r.seconds for r in students}},
            "metrics": metrics}


def _finetune(out: Path, teacher: Path, b: int, blocks: list[int], reduced: dict, ethanol: Path,
              settings: DemoSettings, device: str) -> dict:
    """The teacher (``BR`` at its own size), and the BR and BR+KD models of ``blocks``, fine-tuned on
    ethanol for ``ft_epochs`` epochs each (a validation per epoch) and scored on its test split."""
    from fairchem_prune.fairchem2.data import read_structures
    from fairchem_prune.fairchem2.evaluation import evaluate_structures
    from fairchem_prune.fairchem2.finetune import read_metrics
    from fairchem_prune.fairchem2.runs import FinetuneRun, prepare, train_all

    folder = out / "finetune"
    template = ethanol / "uma_sm_finetune_template.yaml"
    starts = {("BR", b): teacher}
    for k in blocks:
        starts[("BR", k)] = Path(reduced["checkpoints"][f"br_{k}b"])
        starts[("BR+KD", k)] = Path(reduced["checkpoints"][f"kd_{k}b"])
    runs = {key: FinetuneRun.under(folder, f"{'kd' if key[0] == 'BR+KD' else 'br'}_{key[1]}b", list(range(key[1])),
                                   start=start) for key, start in starts.items()}
    steps_per_epoch = math.ceil(settings.ethanol_sizes[0] / settings.ft_batch_size)
    prepare(list(runs.values()), template, teacher, say=lambda m: say(f"finetune: {m}"),  # fairchem validates per epoch
            steps=settings.ft_epochs * steps_per_epoch, batch_size=settings.ft_batch_size, lr=settings.ft_lr, ema_decay=settings.ft_ema_decay, device=device)
    train_all(list(runs.values()), say=lambda m: say(f"finetune: {m}"))
    test = {"test": (read_structures(ethanol / "test", settings.ethanol_sizes[2], task=ETHANOL_TASK), ETHANOL_TASK)}
    log = out / "logs" / "scoring.log"
    rows = []
    for (init, k), run in runs.items():
        train, val = read_metrics(run.paths.metrics)
        forces = next((key for key in (val[-1] if val else {}) if key.endswith("forces,mae")), None)
        last = {r["step"]: r for r in val}  # the last step's validation, then the end of training's: the same
        curve = [[r["time"] - train[0]["time"], step, r[forces]] for step, r in sorted(last.items())] if forces else []
        rows.append({"init": init, "blocks": k, "name": run.name, "train_seconds": run.seconds, "curve": curve,
                     "test": evaluate_structures(run.paths.final_checkpoint, test, device=device, log=log,
                                                 desc=f"scoring {run.name}")["test"],
                     "checkpoint": str(run.paths.final_checkpoint)})
    return {"epochs": settings.ft_epochs, "rows": rows}


def _md_check(out: Path, rows: list[dict], ethanol: Path, settings: DemoSettings, device: str) -> dict:
    """md-check of every fine-tuned model from the first ethanol test frame; fairchem's log in ``out/logs/md.log``."""
    from fairchem_prune.console import chatter_to
    from fairchem_prune.fairchem2.calculators import checkpoint_calculators
    from fairchem_prune.fairchem2.data import read_structures
    from fairchem_prune.md_check import MDSettings, check_models

    named = {f"{'teacher' if r['name'] == rows[0]['name'] else r['init']} {r['blocks']}b": Path(r["checkpoint"])
             for r in rows}
    log = out / "logs" / "md.log"
    factories, kinds = checkpoint_calculators(named, ETHANOL_TASK, "merged", device)
    with chatter_to(log):
        result = check_models(factories, read_structures(ethanol / "test", 1, task=ETHANOL_TASK),
                              MDSettings(steps=settings.md_steps, timestep=0.5, temperature=300.0), kinds=kinds)
    return {**result, "task": ETHANOL_TASK, "inference_settings": "merged"}


def _benchmark(teacher: Path, blocks: list[int], settings: DemoSettings, device: str) -> dict:
    from fairchem_prune.fairchem2.benchmark import run_benchmark

    return run_benchmark(teacher, blocks=blocks, systems=BENCH_SYSTEMS, device=device, repeats=settings.bench_repeats)


def _sections(record, mix, settings, reduced, tuned, bench, tables, checks) -> list[tuple[str, str]]:
    from fairchem_prune.demo import report

    counts = mix.manifest["counts"]
    distill = reduced["distillation"]
    setup = (
        f"- Demo data: `{mix.root}` ({', '.join(f'{k}: {v}' for k, v in counts.items())}); the xTB molecules "
        f"are UMA task omol (charge 0, spin 1), the EMT slabs task oc20; energies in eV, forces in eV/Å.\n"
        f"- Teacher: {record['origin']}; a UMA-architecture model (eSCN-MD backbone with mixture-of-linear-"
        f"experts, conserving energy and forces heads per task) with {record['blocks']} blocks, "
        f"{record['parameters']:,} parameters" + (f" ({record['note']})" if record.get("note") else "")
        + (f"; {report.teacher_convergence(record['val_curve'], columns=record.get('curve_columns'))}"
           if record.get("val_curve") else "") + ".\n"
        f"- Distillation: {distill['samples']} structures per student in batches of {distill['batch_size']}, "
        f"lr {settings.kd_lr:g}, EMA decay {settings.kd_ema_decay:g}, sources drawn with temperature 2; the "
        "teacher's energies and forces as every task's targets + node-to-node L1 on the final node embedding's "
        "scalars (fairchem-prune's DistillTrainEvalUnit in `fairchem -c`).\n"
        f"- Fine-tuning: ethanol (rMD17 format, xTB MD at 500 K) as task omol, {settings.ethanol_sizes[0]} / "
        f"{settings.ethanol_sizes[1]} / {settings.ethanol_sizes[2]} frames train / val / test, {settings.ft_epochs} "
        f"epochs for every model (batches of {settings.ft_batch_size}, lr {settings.ft_lr:g}, EMA decay "
        f"{settings.ft_ema_decay:g}) with fairchem's UMA fine-tuning template (create_uma_finetune_dataset.py)."
        + ("\n- **Quick mode**: a tiny teacher and a few steps; the numbers check the pipeline, not the method."
           if settings.quick else "")
        + ("\n\n![teacher](teacher_curve.png)" if record.get("val_curve") else ""))
    return [
        ("Set-up", setup),
        ("Block relevance (Fig. 2)", "![relevance](relevance.png)\n\nGradCAM relevance of each block's output on "
         "each source's validation structures, under the loss of the source's task:\n\n" + tables["relevance"]),
        ("Block reduction and distillation (Table 1)", "Validation force MAE in meV/Å ("
         + ", ".join(f"{n} {source} structures" for source, n in reduced["scored"].items())
         + ", free atoms); the gap to the teacher in parentheses. "
         "BR: the teacher's first k blocks, no training. BR+KD: after distillation; closed: the share of the BR "
         "gap that distillation closes, (BR - BR+KD) / (BR - teacher).\n\n" + tables["reduction"]
         + "\n\nThe same models as the OC20 S2EF leaderboard scores them (fairchem's Evaluator): EFwT is the share of "
         "structures whose energy is within 0.02 eV and every force within 0.03 eV/Å.\n\n" + tables["leaderboard"]),
        ("Fine-tuning (Fig. 3, Fig. 4)", "![finetune](finetune.png)\n\n![curves](finetune_curves.png)\n\nTest MAE "
         "of the final model (EMA weights); train s = wall time of `fairchem -c`, start-up and validations "
         "included.\n\n" + tables["finetune"]),
        ("Molecular dynamics", f"![md](md.png)\n\nNVE runs (velocity Verlet, 0.5 fs, {settings.md_steps} steps, "
         "300 K starting velocities, the same for every model) from the first ethanol test frame, of the "
         "fine-tuned models (FAIRChemCalculator, experts merged).\n\n" + tables["md"]),
        ("Efficiency (Table 2)", f"`fairchem-prune benchmark` on the teacher's architecture "
         f"({bench['environment']['device']}).\n\n" + tables["efficiency"]),
        ("Findings", "\n".join(f"- {line}" for line in checks)),
    ]
