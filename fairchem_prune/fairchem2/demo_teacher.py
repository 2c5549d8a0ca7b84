"""The fairchem 2 demo's teacher: a small UMA-architecture model pre-trained from random weights by
``fairchem -c`` of ``configs/fairchem2/demo/demo_mix_teacher_6b.yaml`` on the demo mix
(:mod:`~fairchem_prune.fairchem2.demo_data`), filled in with the data folders and each training
source's force RMS and element references; :func:`teacher_record` holds its settings, final validation
metrics and validation curve.

The shipped teacher (``fairchem_prune/demo/assets/uma_teacher_6b.pt`` and ``.json``) is that config
trained for its 5 epochs on the default demo data (``standard``, seed 0) and exported with its EMA
weights (:func:`export_teacher`): what ``fairchem-prune demo --train-teacher`` does on fairchem 2. It
is used only with the demo data it was trained on.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2.demo_data import SOURCE_TASKS, MixData, normaliser_and_references
from fairchem_prune.fairchem2.finetune import check_config, metric_values, read_metrics
from fairchem_prune.fairchem2.runs import FinetuneRun
from fairchem_prune.files import atomic_path
from fairchem_prune.resources import config_path

TEACHER_CONFIG = "fairchem2/demo/demo_mix_teacher_6b.yaml"
SHIPPED = Path(__file__).resolve().parent.parent / "demo" / "assets" / "uma_teacher_6b.pt"
#: the YAML anchors of the config (merged into their users on reading)
_ANCHORS = ("omol_dataset", "oc20_dataset", "energy_loss", "forces_loss")


def teacher_run(out: Path) -> FinetuneRun:
    """The teacher's run under ``out``: ``configs/teacher.yaml``, ``logs/teacher.log``, ``runs/teacher/``."""
    return replace(FinetuneRun.under(out, "teacher", []), checkpoint=None, sliced=False)


def _mix_config(mix: MixData, epochs: int | None) -> dict:
    """The teacher's config with the demo mix ``mix`` filled in (``epochs``: instead of the config's;
    a validation and a checkpoint every half epoch)."""
    config = yaml.safe_load(config_path(TEACHER_CONFIG).read_text())
    for anchor in _ANCHORS:
        config.pop(anchor)
    train, val = mix.split("train"), mix.split("val")
    for source, task in SOURCE_TASKS.items():
        rms, references = normaliser_and_references(train[source])
        config.update({f"{task}_force_rms": rms, f"{task}_elem_refs": references})
        for split, folder in (("train", train[source]), ("val", val[source])):  # written in place: data_sources reads them
            config[f"{split}_dataset"]["dataset_configs"][task]["splits"][split]["src"] = str(folder.resolve())
            config.pop(f"{task}_{split}")
    if epochs is not None:
        if epochs < 1:
            raise PruneError(f"teacher epochs must be at least 1, got {epochs}")
        config["epochs"] = epochs
    structures = sum(v for k, v in mix.manifest["counts"].items() if k.startswith("pretrain/train/"))
    half_epoch = math.ceil(math.ceil(structures / config["batch_size"]) / 2)
    config.update(evaluate_every_n_steps=half_epoch, checkpoint_every_n_steps=half_epoch)
    return config


def write_teacher_config(mix: MixData, out: Path, epochs: int | None = None, device: str = "cpu") -> FinetuneRun:
    """Write the teacher's pre-training config for the demo mix ``mix`` (``epochs``: instead of the
    config's) under ``out`` (kept when already there and the same: an interrupted run resumes)."""
    config = _mix_config(mix, epochs)
    run = teacher_run(out)
    config["job"].update(run_dir=str(run.paths.run_dir), timestamp_id=run.name, device_type=device.upper())
    text = (f"# the fairchem 2 demo teacher, pre-trained from random weights on {mix.root}\n"
            f"# written by fairchem-prune demo from {config_path(TEACHER_CONFIG)}\n"
            f"# run: fairchem -c {run.config}   (trained model: {run.paths.final_checkpoint})\n"
            + yaml.safe_dump(config, sort_keys=False))
    if run.config.is_file() and run.config.read_text() == text:
        return run
    if run.paths.checkpoints.is_dir():
        raise PruneError(f"{run.paths.folder} holds a teacher run of another config; remove it or pass --force")
    for folder in (run.config.parent, run.log.parent):
        folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.config) as tmp:
        tmp.write_text(text)
        check_config(tmp)
    return run


def write_mix_template(mix: MixData, teacher: Path, path: Path) -> Path:
    """A fine-tuning template (``finetune-config``, ``distill-config``, ``compress --distill``) of the
    demo mix with the teacher's tasks: the teacher's config whose model is fairchem's
    ``initialize_finetuning_model`` of ``teacher`` with its own heads (fairchem-prune puts the
    checkpoint it trains in its place). Written once."""
    from fairchem_prune.fairchem2.finetune import FAIRCHEM_FINETUNING_MODEL

    if path.is_file():
        return path
    config = _mix_config(mix, None)
    values = {f"${{{name}}}": config.pop(name) for name in [k for k in config if k.endswith(("_force_rms", "_elem_refs"))]}
    tasks = _inlined(config.pop("tasks"), values)  # written where they are used: a distillation replaces them by the teacher's
    for loader in ("train_dataloader", "eval_dataloader"):
        config[loader]["collate_fn"]["tasks"] = tasks
    config["runner"]["train_eval_unit"]["tasks"] = tasks
    config["runner"]["train_eval_unit"]["model"] = {
        "_target_": FAIRCHEM_FINETUNING_MODEL, "checkpoint_location": str(Path(teacher).resolve()),
        "overrides": {"backbone": {"otf_graph": True, "always_use_pbc": False}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(f"# the demo mix ({mix.root}) with the demo teacher's tasks, as a fine-tuning template\n"
                       + yaml.safe_dump(config, sort_keys=False))
        check_config(tmp)
    return path


def _inlined(value, values: dict):
    """``value`` with every string leaf that is a key of ``values`` (``"${name}"``) replaced by its value."""
    if isinstance(value, dict):
        return {k: _inlined(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_inlined(v, values) for v in value]
    return values.get(value, value) if isinstance(value, str) else value


def teacher_record(run: FinetuneRun, mix: MixData, origin: str) -> dict:
    """What the demo reports about a trained teacher: its config and data, the last validation's
    metrics and the validation curve (``[epoch, force MAE per dataset (eV/Å)]``)."""
    config = yaml.safe_load(run.config.read_text())
    train, val = read_metrics(run.paths.metrics)
    if not val:
        raise PruneError(f"teacher run {run.paths.folder} has no validation in {run.paths.metrics}")
    steps_per_epoch = max(r["step"] for r in train) / config["epochs"]
    forces = {task: f"{task}.val,{task}_forces,mae" for task in SOURCE_TASKS.values()}
    return {
        "origin": origin, "config": Path(TEACHER_CONFIG).name, "epochs": config["epochs"],
        "batch_size": config["batch_size"], "data": {k: mix.manifest[k] for k in ("size", "seed")},
        **architecture(run.paths.final_checkpoint),
        "val_metrics": metric_values(val[-1]),
        "val_curve": [[r["step"] / steps_per_epoch, *(r.get(key) for key in forces.values())] for r in val],
        "curve_columns": ["epoch", *(f"{task} force MAE (eV/Å)" for task in forces)],
        "seconds": run.seconds,
    }


def export_teacher(checkpoint: Path, target: Path) -> None:
    """The trained inference ``checkpoint`` as the demo keeps it (``target``): its EMA weights, the ones
    it predicts with, also as its raw weights (which fine-tuning starts from), stored once."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint, save_inference_checkpoint

    teacher = read_inference_checkpoint(checkpoint, need_ema=True)
    teacher.model_state_dict = {key.removeprefix("module."): value for key, value in teacher.ema_state_dict.items()
                                if key != "n_averaged"}
    save_inference_checkpoint(teacher, target)


def teacher_stage(out: Path, mix: MixData, epochs: int | None, given: str | None, train: bool, device: str,
                  force: bool, say) -> tuple[Path, dict]:
    """``out/teacher.pt`` and its record (``out/teacher.json``), made once: the checkpoint ``given``
    (its EMA weights), else the shipped teacher where it was trained on ``mix`` and ``train`` is off, else
    the teacher pre-trained here by ``fairchem -c`` (``epochs``: instead of the config's; an interrupted
    run resumes)."""
    from fairchem_prune.fairchem2.checkpoints import has_ema, read_inference_checkpoint
    from fairchem_prune.fairchem2.runs import train_all

    target, record_path = out / "teacher.pt", out / "teacher.json"
    if target.is_file() and record_path.is_file() and not force:
        record = json.loads(record_path.read_text())
        say(f"teacher: found {target} ({record['origin']}, {record['blocks']} blocks)")
        return target, record
    if given is not None:
        if not Path(given).is_file():
            raise PruneError(f"--teacher {given}: no such checkpoint file")
        if has_ema(read_inference_checkpoint(given)):
            export_teacher(Path(given), target)
        else:
            shutil.copyfile(given, target)
        record = {"origin": f"given ({given})", **architecture(target)}
    elif not train and epochs is None and _shipped_for(mix):
        shutil.copyfile(SHIPPED, target)
        record = json.loads(SHIPPED.with_suffix(".json").read_text())
    else:
        if force and teacher_run(out).paths.folder.exists():
            shutil.rmtree(teacher_run(out).paths.folder)
        run = write_teacher_config(mix, out, epochs, device)
        config = yaml.safe_load(run.config.read_text())
        say(f"teacher: pre-training {Path(TEACHER_CONFIG).name} for {config['epochs']} epochs on the demo mix")
        train_all([run], say=lambda m: say(f"teacher: {m}"))
        export_teacher(run.paths.final_checkpoint, target)
        record = teacher_record(run, mix, f"trained by this run ({Path(TEACHER_CONFIG).name}, {config['epochs']} epochs)")
    read_inference_checkpoint(target)
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    say(f"teacher: {target} ({record['origin']}; {record['blocks']} blocks, {record['parameters']:,} parameters)")
    return target, record


def _shipped_for(mix: MixData) -> bool:
    """Whether the shipped teacher was trained on the demo data ``mix`` (its size and seed)."""
    if not SHIPPED.is_file():
        return False
    data = json.loads(SHIPPED.with_suffix(".json").read_text())["data"]
    return data == {"size": mix.manifest["size"], "seed": mix.manifest["seed"]}


def architecture(path: Path) -> dict:
    """``{"blocks", "parameters"}`` of the inference checkpoint ``path``."""
    from fairchem_prune.fairchem2 import escn_md
    from fairchem_prune.fairchem2.checkpoints import load_model, read_inference_checkpoint
    from fairchem_prune.fairchem2.slicing import count_parameters

    checkpoint = read_inference_checkpoint(path)
    return {"blocks": escn_md.num_blocks(checkpoint.model_config, f"checkpoint {path}"),
            "parameters": count_parameters(load_model(checkpoint, path))}
