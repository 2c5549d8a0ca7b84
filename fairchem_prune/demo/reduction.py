"""The demo's pre-training side: block relevance of the teacher, block reduction (BR) to fewer blocks,
knowledge distillation (BR+KD) of each reduced student on the demo mix, and the force / energy error
of every model on the validation split of each pre-training source (the paper's Table 1)."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from fairchem.core.common.utils import load_config

from fairchem_prune.architectures import by_name
from fairchem_prune.fairchem_runs import FairchemRun, train_all
from fairchem_prune.demo.report import run_name
from fairchem_prune.resources import config_path



def relevance(teacher: Path, data, num_samples: int, device: str) -> dict:
    """GradCAM block relevance of ``teacher`` on each pre-training source's validation split."""
    from fairchem_prune.relevance import block_relevance

    sources = data.val_sources()
    return block_relevance(teacher, list(sources.values()), names=list(sources), num_samples=num_samples,
                           device=device)


def reduced_counts(blocks: int, steps: int) -> list[int]:
    """Block counts of the reduced models: b-1 down to b-``steps`` (at least 1)."""
    return [k for k in range(blocks - 1, blocks - steps - 1, -1) if k >= 1]


def slice_models(teacher: Path, counts: list[int], folder: Path) -> dict[int, Path]:
    """BR: ``folder/br_<k>b.pt``, the teacher's first k blocks with the sliced FinalMLP."""
    from fairchem_prune.slicing import slice_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k in counts:
        paths[k] = folder / f"br_{k}b.pt"
        if not paths[k].exists():
            slice_checkpoint(teacher, paths[k], num_blocks_kept=k, force=True)
    return paths


#: the distillation options the demo compares (task.distill settings added to the architecture's config)
OPTIONS = {
    "rattle": {"rattle_fraction": 0.5, "rattle_sigma": 0.05},
    "teacher MD": {"md_fraction": 0.5, "md_steps": 5, "md_temperature": 500.0},
    "Jacobian rows": {"jacobian_weight": 1.0, "jacobian_rows": 1},
    "per-atom energies": {"atom_energy_weight": 1.0},
}


def distillation_runs(teacher: Path, architecture: str, counts: list[int], data, settings, folder: Path,
                      logs: Path, seeds: int = 1, options: dict[str, dict] | None = None,
                      option_blocks: int | None = None) -> dict[str, FairchemRun]:
    """``trainer: distill`` runs by :func:`run_name`: each block count with ``seeds`` seeds (fairchem's
    ``--seed``: the order of the sampled structures), and each of ``options`` at ``option_blocks`` blocks
    (seed 0); ``settings.kd_samples`` structures of the mix each, one validation pass at the end. An
    option the architecture does not have is left out."""
    folder.mkdir(parents=True, exist_ok=True)
    adapter = by_name(architecture)
    base = load_config(str(config_path(adapter.distill_config)))[0]
    form = {"name": base["model"].get("name")}
    steps = math.ceil(settings.kd_samples / settings.batch_size)
    plan = [(k, seed, None) for k in counts for seed in range(seeds)]
    for option, extra in (options or {}).items():
        if "atom_energy_weight" in extra and adapter.atom_energy_module is None:
            continue
        plan.append((option_blocks, 0, option))
    runs = {}
    for k, seed, option in plan:
        name = run_name(k, seed, option)
        config = folder / f"{name}.yml"
        distill = {"teacher_checkpoint": str(teacher.resolve()), "max_samples": settings.kd_samples,
                   **((options or {}).get(option, {}))}
        config.write_text(yaml.safe_dump({
            "includes": [str(config_path(adapter.distill_config))],
            "dataset": {"train": {"src": str(data.train.resolve())}, "val": {"src": str(data.val.resolve())}},
            "task": {"distill": distill},
            "model": adapter.with_core(form, {"num_blocks_kept": k}),
            "optim": {"batch_size": settings.batch_size, "T_max": steps, "eval_every": steps,
                      "print_every": max(1, steps // 10)},
        }, sort_keys=False))
        runs[name] = FairchemRun(name, config, folder / "runs", logs / f"{name}.log", args=("--seed", str(seed)))
    return runs


def distill(runs: dict[str, FairchemRun], fairchem_args: list[str], workers: int, folder: Path, say) -> dict[str, Path]:
    """Train the runs and export each student's best checkpoint to ``folder/<run name>.pt``."""
    from fairchem_prune.slicing import slice_checkpoint

    train_all(list(runs.values()), fairchem_args, workers, say=lambda m: say(f"distill: {m}"))
    paths = {}
    for name, run in runs.items():
        paths[name] = folder / f"{name}.pt"
        if not paths[name].exists():
            slice_checkpoint(run.best_checkpoint, paths[name], force=True)
    return paths


def option_costs(run: FairchemRun, options: dict[str, dict], out: Path) -> dict[str, float | None]:
    """Seconds per step of each distillation option relative to the plain config
    (:mod:`fairchem_prune.distill_cost`, in its own process on ``run``'s config), by option name."""
    import json
    import subprocess
    import sys

    from fairchem_prune.errors import PruneError

    spec = json.dumps({"config": {}, **options})
    result = subprocess.run([sys.executable, "-m", "fairchem_prune", "distill-cost", "--config", str(run.config.resolve()),
                             "--repeats", "3", "--threads", "1", "--options", spec, "--out", str(out), "--force"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise PruneError(f"measuring the distillation options failed: {result.stderr.strip().splitlines()[-1:]}")
    return {row["option"]: row["relative"] for row in json.loads(out.read_text())["rows"]}


def evaluate_models(models: dict[str, Path], data, device: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {source: {"energy_mae", "forces_mae", "forces_cosine_similarity"}}}`` (eV, eV/Å) on
    each source's validation split."""
    from fairchem_prune.evaluation import evaluate_on_datasets

    return {name: evaluate_on_datasets(path, data.val_sources(), device=device,
                                       show_progress=f"reduction: scoring {name} ({i}/{len(models)})")
            for i, (name, path) in enumerate(models.items(), 1)}
