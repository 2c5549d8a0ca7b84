"""Training a teacher, distilling a sliced student, the distill command line, fairchem's training log
and its trainer built in this process, for the distill trainer tests."""

import re
from pathlib import Path

import yaml
from conftest import fairchem

from fairchem_prune.fairchem_runs import build_trainer  # noqa: F401  (the tests build trainers with it)

REPO = Path(__file__).parents[2]


def train_teacher(root: Path, model: dict, emt_lmdb: dict, lr: float) -> Path:
    """``model`` trained for 20 epochs (60 steps) on the EMT slabs with the stock trainer and
    configs/s2ef/demo_base.yml under ``root``; its best checkpoint."""
    config = root / "teacher.yml"
    config.write_text(yaml.safe_dump({"includes": [str(REPO / "configs/s2ef/demo_base.yml")], "model": model}))
    fairchem("--mode", "train", "--config-yml", config, "--cpu", "--run-dir", root, "--timestamp-id", "t",
             f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}",
             "--optim.max_epochs=20", "--optim.T_max=60", f"--optim.lr_initial={lr}", "--optim.eval_every=60", cwd=root)
    return root / "checkpoints" / "t" / "best_checkpoint.pt"


def distill_command(config: str, teacher, emt_lmdb: dict, run_dir, run_id: str, *extra) -> list:
    """``fairchem`` arguments that distil ``teacher`` with configs/s2ef/``config`` on the EMT slabs."""
    return ["--mode", "train", "--config-yml", REPO / "configs" / "s2ef" / config, "--cpu", "--run-dir", run_dir,
            "--timestamp-id", run_id, "--print-every", "1", f"--task.distill.teacher_checkpoint={teacher}",
            f"--dataset.train.src={emt_lmdb['train']}", f"--dataset.val.src={emt_lmdb['val']}", *extra]


def distil_sliced_student(config: str, teacher: Path, emt_lmdb: dict, run_dir: Path, num_blocks_kept: int):
    """Slice ``teacher`` to its first ``num_blocks_kept`` blocks, and distil that student (run ``kd``) for
    one epoch of 240 structures (30 steps) with configs/s2ef/``config``. Returns (fairchem's log, the
    distilled checkpoint, validation force MAEs in eV/Å ``{"teacher", "sliced", "distilled"}``)."""
    from fairchem_prune.evaluation import evaluate_checkpoint
    from fairchem_prune.slicing import slice_checkpoint

    sliced = run_dir / f"sliced_{num_blocks_kept}b.pt"
    slice_checkpoint(teacher, sliced, num_blocks_kept=num_blocks_kept)
    log = fairchem(*distill_command(config, teacher, emt_lmdb, run_dir, "kd", "--task.distill.max_samples=240",
                                    "--optim.lr_initial=0.001", "--optim.T_max=30", "--optim.eval_every=30"), cwd=run_dir)
    distilled = run_dir / "checkpoints" / "kd" / "checkpoint.pt"
    checkpoints = {"teacher": teacher, "sliced": sliced, "distilled": distilled}
    maes = {name: evaluate_checkpoint(path, emt_lmdb["val"])["forces_mae"] for name, path in checkpoints.items()}
    print(f"force MAE (eV/A), {num_blocks_kept}-block student: " + ", ".join(f"{k} {v:.4f}" for k, v in maes.items()))
    return log, distilled, maes


def logged(log: str, key: str) -> list[float]:
    """Values of ``key`` in fairchem's per-step training log lines."""
    return [float(v) for v in re.findall(rf"ocp_trainer\.py:\d+: \(INFO\): .*?\b{key}: ([0-9.e+-]+)", log)]
