"""``fairchem-prune demo`` (also ``python -m fairchem_prune.demo``): the paper's study, end to end, on
the embedded demo data (xTB-labelled molecules and EMT-labelled slabs; see :mod:`fairchem_prune.demo.generation`).

Stages, each kept under ``--out`` and skipped when its result exists (``--force`` redoes them all;
interrupted training runs resume from fairchem's own ``checkpoint.pt``):

1. ``data``       the demo mix (cached in ``~/.cache/fairchem-prune/demo_data/``) and the ethanol task
                  -> ``data/ethanol/{train,val,test}/``
2. ``teacher``    the 6-block model pre-trained on the mix (``configs/s2ef/demo_mix_teacher_6b.yml``):
                  shipped, ``--teacher`` (any checkpoint of an architecture fairchem-prune knows, monolithic or hydra),
                  or trained
                  -> ``teacher.pt``, ``teacher.json``
3. ``relevance``  GradCAM block relevance per source -> ``relevance.json``, ``relevance.png``
4. ``reduction``  BR to b-1 .. b-4 blocks, BR+KD (``trainer: distill``) -> ``reduction/``,
                  ``reduction.json`` (force / energy error and EFwT per source: Table 1 and its leaderboard view)
5. ``finetune``   the teacher-size model and BR, BR+KD and scratch at one reduced count (``--full``:
                  also BR, BR/RandomMLP and BR+KD at every count) fine-tuned on ethanol for the same
                  number of epochs, the default models with several seeds -> ``finetune/``,
                  ``finetune.json``, ``finetune.png`` (Fig. 3), ``finetune_curves.png`` (Fig. 4)
6. ``md``         NVE molecular dynamics of the fine-tuned teacher-size, BR and BR+KD models (tools/md_check.py)
                  -> ``md.json``, ``md.png``
7. ``benchmark``  speed, FLOPs, parameters, memory of the teacher's architecture -> ``benchmark.json`` (Table 2)
8. ``report``     ``report.md`` with every table and figure, and the tables printed
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from fairchem_prune.demo.generation import SIZES, DemoSize
from fairchem_prune.errors import PruneError, require_device
from fairchem_prune.files import json_stage
from fairchem_prune.resources import config_path



@dataclass(frozen=True)
class DemoSettings:
    quick: bool
    data_size: str                 #: cache name of the demo data
    data_spec: DemoSize
    ethanol_sizes: tuple[int, int, int]   #: train / val / test frames of the downstream task
    teacher_config: Path
    teacher_epochs: int
    relevance_samples: int         #: per source
    reductions: int                #: how many block counts below the teacher's
    kd_samples: int                #: structures seen by each distillation run
    ft_epochs: int
    ft_seeds: int                  #: fine-tuning runs (seeds) of each default model
    bench_repeats: int
    md_steps: int                  #: NVE steps of each fine-tuned model
    md_structures: int             #: ethanol test frames it starts from
    batch_size: int = 8
    ft_ema: float = 0.9            #: EMA decay of the fine-tunes (the recipe's 0.99 lags a run of a few hundred steps)


FULL = DemoSettings(
    quick=False, data_size="standard", data_spec=SIZES["standard"],
    ethanol_sizes=(200, 50, 200), teacher_config=config_path("s2ef/demo_mix_teacher_6b.yml"),
    teacher_epochs=30, relevance_samples=50, reductions=4, kd_samples=6696, ft_epochs=20, ft_seeds=3, bench_repeats=3,
    md_steps=400, md_structures=1,
)
QUICK = DemoSettings(
    quick=True, data_size="quick", data_spec=DemoSize(g2_frames=2, slabs=40, rmd17_frames=100, md22_frames=2,
                                                      qm9_conformers=1, g2_molecules=20),
    ethanol_sizes=(40, 16, 24), teacher_config=config_path("s2ef/demo_quick_teacher_3b.yml"),
    teacher_epochs=2, relevance_samples=8, reductions=2, kd_samples=32, ft_epochs=2, ft_seeds=2, bench_repeats=1,
    md_steps=20, md_structures=1,
)


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def stage(out: Path, name: str, force: bool, compute, figures: dict | None = None) -> dict:
    """The stage's ``out/<name>.json`` (:func:`~fairchem_prune.files.json_stage`); ``figures``: file
    name under ``out`` -> ``draw(result, path)``."""
    path = out / f"{name}.json"
    if path.exists() and not force:
        say(f"{name}: found {path}, skipped")
    return json_stage(path, compute, force, {out / f: draw for f, draw in (figures or {}).items()})[0]


def run_demo(out: str | Path = "demo_out", quick: bool = False, force: bool = False, device: str = "cpu",
             data: str | Path | None = None, teacher: str | Path | None = None, train_teacher: bool = False,
             workers: int | None = None, kd_seeds: int = 1, kd_options: bool = False, sweep: bool = False) -> dict:
    """Run every stage (see the module docstring); returns ``{"reduction", "finetune", "benchmark",
    "findings"}`` as written to the JSON files. ``kd_seeds``: distillation runs per block count (Table 1
    gives their mean and spread); ``kd_options``: also distil with each option beyond the paper
    (:data:`~fairchem_prune.demo.reduction.OPTIONS`) at the second block count, with its cost per step;
    ``sweep`` (``--full``): fine-tune every block count and starting point, not only the default models."""
    from fairchem_prune.demo import finetune as ft
    from fairchem_prune.demo import reduction, report
    from fairchem_prune.demo.data import demo_data, downstream_data
    from fairchem_prune.demo.teacher import teacher_stage

    require_device(device)
    settings = QUICK if quick else FULL
    if not settings.teacher_config.exists():
        raise PruneError(f"{settings.teacher_config} not found: this install of fairchem-prune has no configs/; "
                         "reinstall its wheel, or install a checkout with ./setup.sh (pip install -e .)")
    workers = workers or (1 if device == "cuda" else min(2, os.cpu_count() or 1))
    fairchem_args = ["--cpu"] if device == "cpu" else []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kd_seeds < 1:
        raise PruneError(f"--kd-seeds must be at least 1, got {kd_seeds}")
    check_settings(out, {"quick": quick, "data": str(Path(data).resolve()) if data else None,
                          "teacher": str(Path(teacher).resolve()) if teacher else None, "train_teacher": train_teacher,
                          "kd_seeds": kd_seeds, "kd_options": kd_options, "sweep": sweep, "host": "fairchem1"},
                    force)
    if force:
        for folder in ("reduction", "finetune"):
            shutil.rmtree(out / folder, ignore_errors=True)
        for log in (out / "logs").glob("*.done"):
            log.unlink()

    say(f"1/8 data{' (quick)' if quick else ''}")
    mix = demo_data(data, settings.data_size, settings.data_spec, 0, say)
    ethanol = downstream_data(mix, out / "data" / "ethanol", settings.ethanol_sizes, force, say)

    say("2/8 teacher")
    teacher_path, record = teacher_stage(out, mix, settings, str(teacher) if teacher else None, train_teacher,
                                         fairchem_args, force, say)

    if record.get("val_curve") and (force or not (out / "teacher_curve.png").exists()):
        report.plot_teacher_curve(record["val_curve"], out / "teacher_curve.png")

    say("3/8 block relevance (GradCAM) per pre-training source")
    from fairchem_prune.md_check import format_table as md_table
    from fairchem_prune.md_check import plot_energies
    from fairchem_prune.relevance import plot_relevance

    relevance = stage(out, "relevance", force, lambda: reduction.relevance(teacher_path, mix, settings.relevance_samples, device),
                       {"relevance.png": plot_relevance})
    table_rel = report.relevance_table(relevance)
    print("\nFig. 2 analogue: GradCAM block relevance (combined) per source:\n" + table_rel)

    counts = reduction.reduced_counts(record["blocks"], settings.reductions)
    say(f"4/8 block reduction to {counts} blocks, with and without distillation")

    option_blocks = counts[min(1, len(counts) - 1)]

    def reduce() -> dict:
        folder = out / "reduction"
        br = reduction.slice_models(teacher_path, counts, folder)
        options = reduction.OPTIONS if kd_options else None
        runs = reduction.distillation_runs(teacher_path, record["architecture"], counts, mix, settings, folder,
                                           out / "logs", seeds=kd_seeds, options=options, option_blocks=option_blocks)
        kd = reduction.distill(runs, fairchem_args, workers, folder, say)
        models = {"teacher": teacher_path, **{f"br_{k}b": br[k] for k in counts}, **kd}
        say(f"reduction: scoring {len(models)} models on {', '.join(mix.val_sources())}")
        from fairchem_prune.checkpoints import checkpoint_model_config, read_checkpoint
        from fairchem_prune.params import count_config_parameters

        result = {"counts": counts, "seeds": kd_seeds, "checkpoints": {k: str(v) for k, v in models.items()},
                  "params": {k: count_config_parameters(checkpoint_model_config(read_checkpoint(v), v))
                             for k, v in models.items() if not k.startswith("kd")},
                  "metrics": reduction.evaluate_models(models, mix, device)}
        if options:
            present = {name: extra for name, extra in options.items() if reduction.run_name(option_blocks, 0, name) in runs}
            say(f"reduction: timing the distillation options at {option_blocks} blocks")
            result["options"] = {"blocks": option_blocks, "names": list(present),
                                 "cost": reduction.option_costs(runs[reduction.run_name(option_blocks)], present,
                                                                folder / "distill_cost.json")}
        return result

    reduced = stage(out, "reduction", force, reduce)
    table1 = report.reduction_table(record["blocks"], counts, reduced["metrics"], reduced["params"], reduced["seeds"])
    print("\nTable 1 analogue: validation force MAE (meV/Å) per pre-training source, gap to the teacher:\n" + table1)
    table_lb = report.leaderboard_table(record["blocks"], counts, reduced["metrics"], reduced["seeds"])
    print("\nThe same models in the S2EF leaderboard's terms:\n" + table_lb)
    table_options = report.options_table(reduced) if "options" in reduced else None
    if table_options:
        print(f"\nDistillation options at {reduced['options']['blocks']} blocks:\n" + table_options)

    focus = counts[min(1, len(counts) - 1)]
    plan = ft.finetune_plan(record["blocks"], counts, focus, settings.ft_seeds, sweep, ft.has_random_mlp(record))
    say(f"5/8 fine-tuning on ethanol: {len(plan)} runs of {settings.ft_epochs} epochs (the {record['blocks']}-block model, "
        f"BR, BR+KD and scratch at {focus} blocks, {settings.ft_seeds} seeds each{'; every count with --full' if sweep else ''})")

    def finetune() -> dict:
        kd = {k: Path(reduced["checkpoints"][f"kd_{k}b"]) for k in counts}
        runs = ft.finetune_runs(teacher_path, record, plan, kd, ethanol, settings, out / "finetune", out / "logs")
        from fairchem_prune.fairchem_runs import train_all

        train_all([r.run for r in runs], fairchem_args, workers, say=lambda m: say(f"finetune: {m}"))
        return {"epochs": settings.ft_epochs, "workers": workers, "rows": ft.score_runs(runs, ethanol, device)}

    tuned = stage(out, "finetune", force, finetune, {"finetune.png": lambda r, p: report.plot_finetune(r["rows"], p),
                                                      "finetune_curves.png": lambda r, p: report.plot_curves(r["rows"], p)})
    table_ft = report.finetune_table(tuned["rows"])
    print("\nFig. 3 analogue: ethanol test MAE after fine-tuning (mean ± standard deviation over seeds):\n" + table_ft)
    table_conv = report.convergence_table(tuned["rows"])
    print("\nConvergence of the fine-tunes (Fig. 4):\n" + table_conv)

    md_blocks = sorted({focus, counts[-1]} if sweep else {focus}, reverse=True)
    say(f"6/8 molecular dynamics of the fine-tuned models (teacher size, {md_blocks} blocks) on ethanol")
    md = stage(out, "md", force, lambda: _md_check(out, tuned["rows"], record["blocks"], md_blocks, ethanol, settings),
                {"md.png": plot_energies})
    table_md = md_table(md)
    print("\nMolecular dynamics (NVE) of the fine-tuned models:\n" + table_md)

    say("7/8 efficiency benchmark (Table 2 analogue)")
    bench = stage(out, "benchmark", force, lambda: _benchmark(out, teacher_path, record, counts, mix, settings, device))
    table2 = report.efficiency_table(bench)
    print("\nTable 2 analogue:\n" + table2)

    say("8/8 report")
    checks = report.findings(relevance, counts, reduced["metrics"], tuned["rows"], reduced["seeds"])
    report.write_report(out / "report.md", _sections(record, mix, settings, table_rel, table1, table_ft, table2, bench,
                                                     checks, tuned, reduced, table_options, table_md, table_lb, table_conv))
    print("\nFindings:\n" + "\n".join(f"- {line}" for line in checks))
    say(f"done: {out / 'report.md'}")
    return {"reduction": reduced, "finetune": tuned, "benchmark": bench, "findings": checks}


def check_settings(out: Path, settings: dict, force: bool) -> None:
    """Results under ``out`` are reused only by a run with the same settings (``out/demo.json``)."""
    path = out / "demo.json"
    if path.exists() and not force:
        before = json.loads(path.read_text())
        defaults = {"kd_seeds": 1, "kd_options": False, "sweep": False, "host": "fairchem1"}  # runs from before these settings existed
        changed = [key for key in settings if before.get(key, defaults.get(key)) != settings[key]]
        if changed:
            raise PruneError(f"{out} holds a demo run with other settings ({', '.join(f'{k}: {before.get(k)}' for k in changed)}); "
                             "choose another --out, or pass --force to redo it with these")
    path.write_text(json.dumps(settings, indent=2) + "\n")


def _benchmark(out: Path, teacher: Path, record: dict, counts: list[int], mix, settings, device: str) -> dict:
    import yaml

    from fairchem_prune.benchmark import run_benchmark
    from fairchem_prune.demo.teacher import teacher_model_config

    config = out / "benchmark_model.yml"
    config.write_text(yaml.safe_dump({"model": teacher_model_config(teacher)}, sort_keys=False))
    return run_benchmark(config, mix.val_sources()["emt_slabs"], blocks=[record["blocks"], *counts], device=device,
                         repeats=settings.bench_repeats, finetune_repeats=max(1, settings.bench_repeats // 2),
                         forces="config", threads=1 if device == "cpu" else None)


def _md_check(out: Path, rows: list[dict], teacher_blocks: int, blocks: list[int], ethanol: Path, settings) -> dict:
    """md-check of the fine-tuned BR model at the teacher's size and of the BR and BR+KD models at
    ``blocks``, from the first ethanol test frames; fairchem's log in ``out/logs/md.log``. On the CPU,
    with one torch thread (as the benchmark): a molecule of 9 atoms gains little from a second one, and
    on a busy machine two threads run several times slower than one."""
    import torch

    from fairchem_prune.console import chatter_to
    from fairchem_prune.md_check import MDSettings, check_models
    from fairchem_prune.md_models import checkpoint_calculators, read_structures

    checkpoints = out / "finetune" / "runs" / "checkpoints"
    by_key = {(r["init"], r["blocks"]): r["name"] for r in rows if not r.get("seed")}
    wanted = [("BR", teacher_blocks)] + [(init, k) for k in blocks for init in ("BR", "BR+KD")]
    named = {("teacher" if k == teacher_blocks else init) + f" {k}b": checkpoints / by_key[(init, k)] / "best_checkpoint.pt"
             for init, k in wanted if (init, k) in by_key}
    log = out / "logs" / "md.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    factories, kinds = checkpoint_calculators(named, log=log)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with chatter_to(log):
            result = check_models(factories, read_structures(ethanol / "test", settings.md_structures),
                                  MDSettings(steps=settings.md_steps, timestep=0.5, temperature=300.0), kinds=kinds)
    finally:
        torch.set_num_threads(threads)
    return {**result, "threads": 1}


def _sections(record, mix, settings, table_rel, table1, table_ft, table2, bench, checks, tuned, reduced,
              table_options, table_md, table_lb, table_conv) -> list[tuple[str, str]]:
    from fairchem_prune.architectures import by_name
    from fairchem_prune.demo import report

    architecture = by_name(record["architecture"])
    counts = mix.manifest["counts"]
    setup = (
        f"- Demo data: `{mix.root}` ({', '.join(f'{k}: {v}' for k, v in counts.items())}); energies in eV, "
        f"forces in eV/Å.\n"
        f"- Teacher: {record['origin']}; {record['architecture']} with {record['blocks']} blocks, "
        f"{record['parameters']:,} parameters"
        + (f"; {report.teacher_convergence(record['val_curve'])}" if record.get("val_curve") else "")
        + ".\n"
        f"- Distillation: {settings.kd_samples} structures per student ({_distill_terms(architecture)}, "
        "temperature-balanced sources).\n"
        f"- Fine-tuning: ethanol (rMD17 format, xTB MD at 500 K), {settings.ethanol_sizes[0]} / "
        f"{settings.ethanol_sizes[1]} / {settings.ethanol_sizes[2]} frames train / val / test, {settings.ft_epochs} "
        f"epochs for every model (fixed compute per epoch count), {settings.ft_seeds} seeds of each default model, "
        f"{tuned['workers']} run(s) at a time."
        + ("\n- **Quick mode**: a tiny teacher and a few steps; the numbers check the pipeline, not the method."
           if settings.quick else "")
        + ("\n\n![teacher](teacher_curve.png)" if record.get("val_curve") else "")
    )
    return [
        ("Set-up", setup),
        ("Block relevance (Fig. 2)", "![relevance](relevance.png)\n\nCombined GradCAM relevance on each source's "
         "validation split, per scored feature (" + architecture.relevance_legend + ")"
         + ":\n\n" + table_rel),
        ("Block reduction and distillation (Table 1)", "Validation force MAE in meV/Å; the gap to the teacher in "
         "parentheses. BR: the teacher's first k blocks"
         + (", sliced readout layer" if len(architecture.mlp_init_choices) > 1 else "")
         + ", no training. BR+KD: after distillation"
         + (f", mean ± standard deviation over {reduced['seeds']} seeds" if reduced["seeds"] > 1 else "")
         + "; closed: the share of the BR gap that distillation closes, (BR - BR+KD) / (BR - teacher).\n\n" + table1
         + "\n\nThe same models as the OC20 S2EF leaderboard scores them (fairchem's Evaluator on each validation "
         "split, forces of the free atoms): EFwT, the leaderboard's ranking metric, is the share of structures whose "
         "energy is within 0.02 eV and every force within 0.03 eV/Å; `fairchem-prune evaluate` gives the full table "
         "(docs/evaluate.md).\n\n" + table_lb
         + (f"\n\nDistillation options beyond the paper at {reduced['options']['blocks']} blocks, the same "
            f"budget ({settings.kd_samples} structures), seed 0; cost per step relative to the plain objective, "
            "measured side by side (tools/distill_cost.py):\n\n" + table_options if table_options else "")),
        ("Fine-tuning (Fig. 3, Fig. 4)", "![finetune](finetune.png)\n\n![curves](finetune_curves.png)\n\nTest MAE of "
         "the best validation checkpoint, mean ± standard deviation over the seeds; train s = training wall time, "
         "validations included, start-up excluded. The curves are seed 0's.\n\n" + table_ft
         + "\n\nConvergence: each model's best validation force MAE and how much it still changed over the last 20 % "
         "of the steps (plateaued: by less than 5 %).\n\n" + table_conv),
        ("Molecular dynamics", f"![md](md.png)\n\nNVE runs (velocity Verlet, 0.5 fs, {settings.md_steps} steps, "
         f"300 K starting velocities, the same for every model) from {settings.md_structures} ethanol test frame(s), "
         "of the fine-tuned models (tools/md_check.py). Direct-force models need not conserve energy.\n\n" + table_md),
        ("Efficiency (Table 2)", f"`tools/benchmark.py` on the teacher's architecture ({bench['settings']['samples']} "
         f"EMT slabs, {bench['environment']['device']}, {bench['environment']['threads']} thread(s)). At the demo's "
         "width the block-independent work (graph, bases, embedding) weighs more than at JMP-L size; see "
         "docs/benchmark.md for JMP-L.\n\n" + table2 + "".join(f"\n\nNote: {n}" for n in bench.get("notes", []))),
        ("Findings", "\n".join(f"- {line}" for line in checks)),
    ]



def _distill_terms(architecture) -> str:
    """The L1 terms of the architecture's distillation config, e.g. "forces + node-to-node L1"."""
    from fairchem.core.common.utils import load_config

    from fairchem_prune.trainers.distill import DistillSettings

    settings = DistillSettings.from_task(load_config(str(config_path(architecture.distill_config)))[0]["task"])
    names = {"force_weight": "forces", "energy_weight": "energy", "n2n_weight": "node-to-node",
             "e2e_weight": "edge-to-edge", "gt_weight": "ground truth"}
    return " + ".join(name for key, name in names.items() if getattr(settings, key)) + " L1"
