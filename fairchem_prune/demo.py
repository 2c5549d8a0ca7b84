"""``fairchem-prune demo``: the method end to end on the embedded demo data.

Stages (each skipped when its outputs exist, ``--force`` redoes them), all under ``--out``:

1. ``data``     EMT-labelled slabs -> ``data/s2ef/{train,val}/data.lmdb``
2. ``teacher``  a small 6-block GemNet-OC pre-trained with the stock ``fairchem`` trainer
                (``configs/s2ef/demo_teacher_6b.yml``) -> ``teacher_6b.pt``; an interrupted run
                resumes from fairchem's own ``checkpoint.pt``
3. ``slice``    block reduction to 5, 4, 3, 2 blocks -> ``teacher_{k}b.pt``
4. ``evaluate`` energy / force MAE of each on the validation set -> ``block_reduction.{json,md}``
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from fairchem_prune.errors import PruneError

REPO = Path(__file__).resolve().parents[1]
TEACHER_CONFIG = REPO / "configs" / "s2ef" / "demo_teacher_6b.yml"
BLOCK_COUNTS = (6, 5, 4, 3, 2)
#: (train, val) structures and teacher epochs, full and --quick
SIZES = {"full": (160, 40, 30), "quick": (32, 8, 2)}


def _say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def make_data(out: Path, num_train: int, num_val: int, force: bool) -> dict[str, Path]:
    from fairchem_prune.demo_data import emt_slabs
    from fairchem_prune.lmdb_io import atoms_to_data, write_lmdb

    paths = {split: out / "data" / "s2ef" / split / "data.lmdb" for split in ("train", "val")}
    if not force and all(p.exists() for p in paths.values()):
        _say(f"data: found {paths['train'].parent.parent}")
        return paths
    _say(f"data: labelling {num_train + num_val} slabs with EMT")
    structures = emt_slabs(num_train + num_val, seed=0)
    split = {"train": structures[:num_train], "val": structures[num_train:]}
    for name, path in paths.items():
        offset = 0 if name == "train" else num_train
        write_lmdb(path, (atoms_to_data(a, offset + i) for i, a in enumerate(split[name])), overwrite=True)
    return paths


def run_fairchem(args: list[str], log: Path) -> None:
    """Run the stock ``fairchem`` CLI, echoing its epoch summaries, full output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fairchem.core._cli", *args]
    with open(log, "w") as sink:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        for line in process.stdout:
            sink.write(line)
            if "base_trainer.py" in line and "(INFO): energy_mae" in line:
                _say("  val " + line.split("(INFO): ", 1)[1].strip())
        if process.wait():
            raise PruneError(f"fairchem exited with status {process.returncode}; see {log}")


def train_teacher(out: Path, data: dict[str, Path], epochs: int, device: str, force: bool) -> Path:
    teacher = out / "teacher_6b.pt"
    if teacher.exists() and not force:
        _say(f"teacher: found {teacher}")
        return teacher
    run_dir = out / "runs"
    ckpt_dir = run_dir / "checkpoints" / "teacher"
    if force:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    args = [
        "--mode", "train", "--config-yml", str(TEACHER_CONFIG),
        "--run-dir", str(run_dir.resolve()), "--timestamp-id", "teacher",
        f"--dataset.train.src={data['train'].parent.resolve()}",
        f"--dataset.val.src={data['val'].parent.resolve()}",
        f"--optim.max_epochs={epochs}",
    ]
    if device == "cpu":
        args.append("--cpu")
    if (ckpt_dir / "checkpoint.pt").exists():
        args += ["--checkpoint", str((ckpt_dir / "checkpoint.pt").resolve())]
        _say("teacher: resuming the interrupted run")
    _say(f"teacher: pre-training a 6-block GemNet-OC for {epochs} epochs (log: {out / 'logs' / 'teacher.log'})")
    run_fairchem(args, out / "logs" / "teacher.log")
    shutil.copyfile(ckpt_dir / "best_checkpoint.pt", teacher)
    return teacher


def slice_teacher(out: Path, teacher: Path, force: bool) -> dict[int, Path]:
    from fairchem_prune.slicing import slice_checkpoint

    models = {6: teacher}
    for blocks in BLOCK_COUNTS[1:]:
        models[blocks] = out / f"teacher_{blocks}b.pt"
        if force or not models[blocks].exists():
            report = slice_checkpoint(teacher, models[blocks], num_blocks_kept=blocks, force=True)
            _say(f"slice: {blocks} blocks, {report.params_after:,} parameters -> {models[blocks]}")
    return models


def evaluate_models(out: Path, models: dict[int, Path], val: Path, device: str, force: bool) -> list[dict]:
    from fairchem_prune.evaluation import evaluate_checkpoint
    from fairchem_prune.params import count_parameters
    from fairchem_prune.checkpoints import load_gemnet_source

    result_file = out / "block_reduction.json"
    if result_file.exists() and not force:
        _say(f"evaluate: found {result_file}")
        return json.loads(result_file.read_text())
    rows = []
    for blocks, path in models.items():
        metrics = evaluate_checkpoint(path, val, device=device)
        params = count_parameters(load_gemnet_source(path).model)
        rows.append({"blocks": blocks, "checkpoint": str(path), "parameters": params, **metrics})
    result_file.write_text(json.dumps(rows, indent=2))
    return rows


def format_table(rows: list[dict]) -> str:
    full = rows[0]
    lines = [
        "| blocks | parameters | energy MAE (meV) | force MAE (meV/Å) | force cos |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        gap = 1000 * (row["forces_mae"] - full["forces_mae"])
        lines.append(
            f"| {row['blocks']} | {row['parameters']:,} ({100 * row['parameters'] / full['parameters']:.0f}%) "
            f"| {1000 * row['energy_mae']:.1f} | {1000 * row['forces_mae']:.1f} ({gap:+.1f}) "
            f"| {row['forces_cosine_similarity']:.4f} |"
        )
    return "\n".join(lines)


def run_demo(out: str | Path = "demo_out", quick: bool = False, force: bool = False, device: str = "cpu") -> list[dict]:
    """Run every stage; returns the block-reduction table rows."""
    if not TEACHER_CONFIG.exists():
        raise PruneError(f"{TEACHER_CONFIG} not found: run the demo from a checkout of the fairchem-prune repository")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise PruneError("--device cuda: no CUDA device visible to torch; use --device cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num_train, num_val, epochs = SIZES["quick" if quick else "full"]
    data = make_data(out, num_train, num_val, force)
    teacher = train_teacher(out, data, epochs, device, force)
    models = slice_teacher(out, teacher, force)
    rows = evaluate_models(out, models, data["val"], device, force)
    table = format_table(rows)
    (out / "block_reduction.md").write_text(
        "# Block reduction of the demo teacher (no fine-tuning)\n\n"
        "Validation set of the demo S2EF data; force MAE gap to the 6-block teacher in parentheses.\n\n" + table + "\n"
    )
    print("\nBlock reduction (sliced FinalMLP, before any fine-tuning or distillation):\n" + table)
    overrides = "" if out.resolve() == (REPO / "demo_out").resolve() else (
        f" --model.pretrained_checkpoint={teacher} --dataset.train.src={data['train'].parent}"
        f" --dataset.val.src={data['val'].parent}"
    )
    print("\nNext: fine-tune the 4-block model with the stock trainer:\n"
          f"  fairchem --mode train --config-yml configs/finetune/demo_s2ef_4b.yml --cpu{overrides}")
    return rows
