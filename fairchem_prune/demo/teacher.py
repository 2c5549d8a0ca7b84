"""The demo's pre-trained teacher: given (``--teacher``), shipped with the package, or trained.

The shipped teacher (``assets/teacher_6b.pt``, ``assets/teacher_6b.json``) is the 6-block
``configs/s2ef/demo_mix_teacher_6b.yml`` trained for 30 epochs (16,740 steps, until its validation
force MAE stopped improving; the curve is in ``teacher_6b.json``) with the stock trainer on the default
demo data (``standard``, seed 0), exported self-contained (EMA weights baked in, no optimizer state):
what ``fairchem-prune demo --train-teacher`` does. It is used only with the demo data it was trained on.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import yaml

from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem_runs import EpochProgress, FairchemRun

ASSETS = Path(__file__).resolve().parent / "assets"
SHIPPED = ASSETS / "teacher_6b.pt"


def export_teacher(checkpoint: Path, target: Path, info: dict) -> dict:
    """Write ``checkpoint`` self-contained to ``target`` (every block kept, EMA weights baked in)
    and ``info`` + architecture facts to ``target``'s ``.json``; returns that record."""
    from fairchem_prune.checkpoints import load_source
    from fairchem_prune.slicing import slice_checkpoint

    source = load_source(checkpoint)
    report = slice_checkpoint(checkpoint, target, num_blocks_kept=source.num_blocks, force=True)
    record = {**info, "architecture": source.architecture.name, "blocks": source.num_blocks,
              "parameters": report.params_after, "used_ema": source.used_ema}
    target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def teacher_model_config(teacher: Path) -> dict:
    """An exported teacher's self-contained ``model:`` config without its block origin
    (``source_blocks``; hydra: heads included): its architecture, to build anew (the benchmark)."""
    from fairchem_prune.architectures import core_section
    from fairchem_prune.checkpoints import checkpoint_model_config, read_checkpoint

    config = checkpoint_model_config(read_checkpoint(teacher), teacher)
    core_section(config).pop("source_blocks", None)
    return config


def teacher_core(teacher: Path) -> dict:
    """The block-holding section of :func:`teacher_model_config` (the model config, or a hydra model's
    backbone): the architecture kwargs and block count, without the model name."""
    from fairchem_prune.architectures import core_section

    return {k: v for k, v in core_section(teacher_model_config(teacher)).items() if k not in ("name", "model")}


def _shipped_matches(manifest: dict) -> bool:
    if not SHIPPED.exists():
        return False
    data = json.loads(SHIPPED.with_suffix(".json").read_text())["data"]
    return data == {"size": manifest["size"], "seed": manifest["seed"]}


def teacher_stage(out: Path, data, settings, teacher: str | None, train: bool, fairchem_args: list[str],
                  force: bool, say) -> tuple[Path, dict]:
    """``out/teacher.pt`` and its record (``teacher.json``), made once."""
    target = out / "teacher.pt"
    if target.exists() and target.with_suffix(".json").exists() and not force:
        record = json.loads(target.with_suffix(".json").read_text())
        say(f"teacher: found {target} ({record['origin']}, {record['blocks']} blocks)")
        return target, record
    data_id = {"size": data.manifest["size"], "seed": data.manifest["seed"]}
    if teacher is not None:
        if not Path(teacher).is_file():
            raise PruneError(f"--teacher {teacher}: no such checkpoint file")
        record = export_teacher(Path(teacher), target, {"origin": f"given ({teacher})"})
    elif not train and not settings.quick and _shipped_matches(data.manifest):
        shutil.copyfile(SHIPPED, target)
        record = json.loads(SHIPPED.with_suffix(".json").read_text())
        target.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    else:
        run, steps_per_epoch = _training_run(out, data, settings, force)
        say(f"teacher: pre-training {settings.teacher_config.name} for {settings.teacher_epochs} epochs on the demo mix "
            f"(log: {run.log})")
        epochs = EpochProgress("teacher")
        try:
            run.train(fairchem_args, on_line=lambda line: (epochs(line), _echo_validation(line, say)))
        finally:
            epochs.close()
        best = run.best_checkpoint
        import torch

        metrics = torch.load(best, map_location="cpu", weights_only=False).get("val_metrics") or {}
        record = export_teacher(best, target, {
            "origin": f"trained by this run ({settings.teacher_config.name}, {settings.teacher_epochs} epochs)",
            "config": settings.teacher_config.name, "epochs": settings.teacher_epochs, "data": data_id,
            "val_metrics": {k: float(v["metric"]) for k, v in metrics.items()},
            "val_curve": training_curve(run, steps_per_epoch),
        })
    say(f"teacher: {target} ({record['origin']}; {record['architecture']}, {record['blocks']} blocks, "
        f"{record['parameters']:,} parameters)")
    return target, record


def training_curve(run: FairchemRun, steps_per_epoch: int) -> list[list[float]]:
    """``[[epoch, validation force MAE (eV/Å)], ...]`` of a teacher's training run, one per validation."""
    curve, _ = run.validation_curve()
    return [[round(step / steps_per_epoch, 3), value] for _, step, value in curve]


def _training_run(out: Path, data, settings, force: bool) -> tuple[FairchemRun, int]:
    folder = out / "teacher"
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    train_size = sum(v for k, v in data.manifest["counts"].items() if k.startswith("pretrain/train/"))
    steps_per_epoch = math.ceil(train_size / settings.batch_size)
    steps = settings.teacher_epochs * steps_per_epoch
    config = folder / "teacher.yml"
    config.write_text(yaml.safe_dump({
        "includes": [str(settings.teacher_config)],
        "dataset": {"train": {"src": str(data.train.resolve())}, "val": {"src": str(data.val.resolve())}},
        "optim": {"max_epochs": settings.teacher_epochs, "batch_size": settings.batch_size, "T_max": steps},
    }, sort_keys=False))
    return FairchemRun("teacher", config, folder / "runs", out / "logs" / "teacher.log"), steps_per_epoch


def _echo_validation(line: str, say) -> None:
    if "base_trainer.py" in line and "(INFO): energy_mae" in line:
        say("  val " + line.split("(INFO): ", 1)[1].strip())
