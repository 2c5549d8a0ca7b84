"""Fine-tuning a reduced UMA / eSEN with fairchem 2's own fine-tuning flow.

fairchem's ``scripts/create_uma_finetune_dataset.py`` writes ASE-LMDB train/val data, a data YAML
(``data/uma_conserving_data_task_*.yaml``: tasks, normaliser, element references, data paths) and
``uma_sm_finetune_template.yaml``, whose model is ``initialize_finetuning_model`` of a checkpoint
downloaded by name from Hugging Face. :func:`write_finetune_config` turns that template into a config
that ``fairchem -c`` runs unchanged from a local (sliced) inference checkpoint:

* ``checkpoint_location``: the checkpoint's absolute path (the name lookup is dropped, and
  ``base_model_name`` with it);
* ``defaults: - data: ...`` keeps working: hydra looks the data group up in the config's own folder,
  so an output written elsewhere gets ``hydra.searchpath`` = the template's folder;
* ``job.timestamp_id`` = the run id, so that the run's folder is known in advance
  (:class:`RunPaths`: ``<run_dir>/<run_id>/checkpoints/final/inference_ckpt.pt``) and a second
  ``fairchem -c`` of the same config resumes from that folder's newest checkpoint (fairchem's
  ``TrainEvalRunner.load_state``);
* a :class:`~fairchem_prune.fairchem2.callbacks.MetricsLog` callback: train loss per step and
  validation metrics per evaluation, as JSON lines in ``<run_dir>/<run_id>/logs/metrics.jsonl``
  (fairchem itself logs them to wandb or the console);
* optional overrides (epochs or steps, batch size, learning rate, device, run folder, checkpoint
  interval), fairchem's own Slurm launcher (:func:`set_slurm`: ``job.scheduler``) and layer-wise
  learning rates (:func:`finetuning_model` + :func:`adamw_layer_decay`).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from fairchem_prune import hosts
from fairchem_prune.errors import PruneError
from fairchem_prune.files import atomic_path, refuse_existing

FAIRCHEM_FINETUNING_MODEL = "fairchem.core.units.mlip_unit.mlip_unit.initialize_finetuning_model"
FINETUNING_MODEL = "fairchem_prune.fairchem2.finetune.finetuning_model"
LAYER_DECAY_ADAMW = "fairchem_prune.fairchem2.finetune.adamw_layer_decay"
METRICS_CALLBACK = "fairchem_prune.fairchem2.callbacks.MetricsLog"
CHECKPOINT_CALLBACK = "fairchem.core.components.callbacks.TrainCheckpointCallback"
METRICS_FILE = "metrics.jsonl"
#: a raw model's block parameters: ``backbone.blocks.<i>.<...>``
_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.")
#: parameters after the last block (full rate): the final norm and the heads
_TOP = ("backbone.norm.", "output_heads.")
#: the ``job.scheduler.slurm`` fields of fairchem's ``SlurmConfig`` that :func:`set_slurm` sets, with their options
SLURM_FIELDS = {"partition": "--slurm-partition", "mem_gb": "--slurm-mem-gb", "timeout_hr": "--slurm-timeout-hr",
                "cpus_per_task": "--slurm-cpus"}


@dataclass
class RunPaths:
    """Where ``fairchem -c`` of a written config puts its run (``job.run_dir``/``job.timestamp_id``)."""

    run_dir: Path
    run_id: str

    @property
    def folder(self) -> Path:
        return self.run_dir / self.run_id

    @property
    def checkpoints(self) -> Path:
        return self.folder / "checkpoints"

    @property
    def final_checkpoint(self) -> Path:
        """The fine-tuned model, written when training ends (``TrainCheckpointCallback``)."""
        return self.checkpoints / "final" / "inference_ckpt.pt"

    @property
    def metrics(self) -> Path:
        return self.folder / "logs" / METRICS_FILE


def config_value(config: dict, dotted: str):
    """The value at the dotted path of a config (None where it has none)."""
    node = config
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def set_value(config: dict, variable: str, paths: list[str], value) -> None:
    """Set the template's top-level ``variable`` (fairchem's template interpolates it everywhere) or,
    where the template has no such variable, each of the dotted ``paths`` it holds."""
    if variable in config:
        config[variable] = value
        return
    for dotted in paths:
        *parents, key = dotted.split(".")
        node = config_value(config, ".".join(parents)) if parents else config
        if isinstance(node, dict) and key in node:
            node[key] = value


def set_length(config: dict, epochs: int | None, steps: int | None) -> None:
    """The run's length (one of ``epochs`` / ``steps``, the other None) in the runner and the schedule."""
    schedule = "runner.train_eval_unit.cosine_lr_scheduler_fn"
    set_value(config, "epochs", ["runner.max_epochs", f"{schedule}.epochs"], epochs)
    set_value(config, "steps", ["runner.max_steps", f"{schedule}.steps"], steps)


def read_template(path: str | Path) -> dict:
    """The fine-tuning YAML at ``path`` (as fairchem's script wrote it), checked to hold
    ``runner.train_eval_unit.model`` of ``initialize_finetuning_model``."""
    path = Path(path)
    if not path.is_file():
        raise PruneError(f"fine-tuning template {path}: no such file (fairchem's create_uma_finetune_dataset.py "
                         "writes <output-dir>/uma_sm_finetune_template.yaml)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PruneError(f"fine-tuning template {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    model = config_value(config, "runner.train_eval_unit.model") if isinstance(config, dict) else None
    if not isinstance(model, dict):
        raise PruneError(f"fine-tuning template {path} has no runner.train_eval_unit.model; give the "
                         "uma_sm_finetune_template.yaml that create_uma_finetune_dataset.py wrote")
    if model.get("_target_") not in (FAIRCHEM_FINETUNING_MODEL, FINETUNING_MODEL):
        raise PruneError(f"fine-tuning template {path}: runner.train_eval_unit.model is {model.get('_target_')!r}, "
                         f"not {FAIRCHEM_FINETUNING_MODEL}; give a fine-tuning template")
    return config


def _data_defaults(config: dict, template: Path) -> list[str]:
    """The ``defaults: - data: NAME`` entries of ``config``, checked to exist beside ``template``."""
    names = []
    for entry in config.get("defaults") or []:
        if isinstance(entry, dict) and "data" in entry:
            name = entry["data"]
            if not isinstance(name, str) or name.startswith("?"):
                raise PruneError(f"fine-tuning template {template}: defaults has data: {name!r}; it was not filled "
                                 "in by create_uma_finetune_dataset.py")
            if not (template.parent / "data" / f"{name}.yaml").is_file():
                raise PruneError(f"fine-tuning template {template} includes data: {name}, but "
                                 f"{template.parent / 'data' / (name + '.yaml')} does not exist")
            names.append(name)
    return names


def write_finetune_config(template: str | Path, checkpoint: str | Path, output: str | Path, *,
                          epochs: int | None = None, steps: int | None = None, batch_size: int | None = None,
                          lr: float | None = None, device: str | None = None, run_dir: str | Path | None = None,
                          run_id: str | None = None, layer_decay: float | None = None,
                          evaluate_every_n_steps: int | None = None, checkpoint_every_n_steps: int | None = None,
                          ema_decay: float | None = None, slurm: dict | None = None, distill=None,
                          force: bool = False) -> RunPaths:
    """Write to ``output`` the fine-tuning config of ``checkpoint`` (a fairchem 2 inference checkpoint)
    made from ``template``; return where its run will be. ``slurm`` (None: the template's scheduler):
    ``fairchem -c`` submits the run to Slurm (:func:`set_slurm`). With ``distill`` (a
    :class:`~fairchem_prune.fairchem2.distill.DistillSettings`), the config distils ``checkpoint`` from
    its teacher instead. Nothing is written on a PruneError."""
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint

    template, checkpoint, output = Path(template), Path(checkpoint), Path(output)
    config = copy.deepcopy(read_template(template))
    refuse_existing(output, force)
    if not output.parent.is_dir():
        raise PruneError(f"output folder {output.parent} does not exist; create it first")
    if not checkpoint.is_file():
        raise PruneError(f"checkpoint {checkpoint}: no such file")
    hosts.require_host(checkpoint)  # before importing fairchem: a 1.x checkpoint is refused at once
    read_inference_checkpoint(checkpoint)
    if epochs is not None and steps is not None:
        raise PruneError("give --epochs or --steps, not both")
    for name, value in (("epochs", epochs), ("steps", steps), ("batch size", batch_size),
                        ("--checkpoint-every", checkpoint_every_n_steps)):
        if value is not None and value < 1:
            raise PruneError(f"{name} must be at least 1, got {value}")
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise PruneError(f"EMA decay must be in [0, 1), got {ema_decay}")
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise PruneError(f"layer decay must be in (0, 1], got {layer_decay}")
    data = _data_defaults(config, template)

    unit = config["runner"]["train_eval_unit"]
    model = unit["model"]
    model["checkpoint_location"] = str(checkpoint.resolve())
    config.pop("base_model_name", None)  # only the Hugging Face lookup used it
    if layer_decay is not None and layer_decay != 1:
        model["_target_"] = FINETUNING_MODEL
        model["layer_decay"] = layer_decay
        optimizer = unit.get("optimizer_fn") or {}
        if optimizer.get("_target_") not in ("torch.optim.AdamW", LAYER_DECAY_ADAMW):
            raise PruneError(f"fine-tuning template {template}: --layer-decay replaces torch.optim.AdamW, but its "
                             f"optimizer_fn is {optimizer.get('_target_')!r}")
        optimizer["_target_"] = LAYER_DECAY_ADAMW

    if epochs is not None or steps is not None:
        set_length(config, epochs, steps)
    if batch_size is not None:
        set_value(config, "batch_size", ["train_dataloader.batch_sampler_fn.batch_size",
                                          "eval_dataloader.batch_sampler_fn.batch_size"], batch_size)
    if lr is not None:
        set_value(config, "lr", ["runner.train_eval_unit.optimizer_fn.lr"], lr)
    if ema_decay is not None:
        unit["ema_decay"] = ema_decay
    if evaluate_every_n_steps is not None:
        set_value(config, "evaluate_every_n_steps", ["runner.evaluate_every_n_steps"], evaluate_every_n_steps)
    if checkpoint_every_n_steps is not None:
        if "checkpoint_every_n_steps" in config:  # the template's variable, which its checkpoint callback reads
            config["checkpoint_every_n_steps"] = checkpoint_every_n_steps
        else:
            for callback in config["runner"].get("callbacks") or []:
                if isinstance(callback, dict) and callback.get("_target_") == CHECKPOINT_CALLBACK:
                    callback["checkpoint_every_n_steps"] = checkpoint_every_n_steps

    job = config.setdefault("job", {})
    if device is not None:
        job["device_type"] = device.upper()
    if slurm is not None:
        set_slurm(job, slurm)
    run_dir = Path(run_dir if run_dir is not None else job.get("run_dir") or output.parent / "runs").resolve()
    job["run_dir"] = str(run_dir)
    run_id = run_id or output.stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise PruneError(f"run id {run_id!r}: use letters, digits, '_', '-' and '.'")
    job["timestamp_id"] = run_id
    callbacks = config["runner"].setdefault("callbacks", [])
    if not any(isinstance(c, dict) and c.get("_target_") == METRICS_CALLBACK for c in callbacks):
        callbacks.append({"_target_": METRICS_CALLBACK})
    if data and output.parent.resolve() != template.parent.resolve():
        config.setdefault("hydra", {}).setdefault("searchpath", []).append(f"file://{template.parent.resolve()}")
    what, command = "fine-tuning", "finetune-config"
    if distill is not None:
        what, command = distill.apply(config), "distill-config"

    header = (f"# fairchem 2 {what} of {checkpoint.resolve()}\n"
              f"# written by fairchem-prune {command} from {template.resolve()}\n"
              f"# run: fairchem -c {output}   (trained model: {RunPaths(run_dir, run_id).final_checkpoint})\n")
    with atomic_path(output) as tmp:
        tmp.write_text(header + yaml.safe_dump(config, sort_keys=False))
        check_config(tmp)
    return RunPaths(run_dir, run_id)


def set_slurm(job: dict, slurm: dict) -> None:
    """Make the config's ``job`` run under fairchem's own Slurm launcher: ``scheduler.mode: SLURM``
    (``fairchem -c`` submits through submitit; on preemption or ``scancel --signal=USR2`` the job is
    requeued and resumes from its newest periodic checkpoint, ``checkpoint_every_n_steps``: fairchem
    links it as ``checkpoints/preemption_state`` and saves nothing new then) and the given
    ``scheduler.slurm`` fields of :data:`SLURM_FIELDS` (None: fairchem's default: 80 GB, 168 h, 8 CPUs,
    the cluster's default partition). fairchem asks for one GPU per rank unless ``device_type`` is
    CPU, then for none."""
    for key in ("mem_gb", "timeout_hr", "cpus_per_task"):
        value = slurm.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise PruneError(f"{SLURM_FIELDS[key]} must be a whole number of at least 1, got {value!r}")
    if slurm.get("partition") is not None and not re.fullmatch(r"[A-Za-z0-9_.,-]+", str(slurm["partition"])):
        raise PruneError(f"--slurm-partition {slurm['partition']!r}: not a Slurm partition name")
    scheduler = job.setdefault("scheduler", {})
    scheduler["mode"] = "SLURM"
    scheduler.setdefault("slurm", {}).update({k: v for k, v in slurm.items() if v is not None})


def data_sources(template: str | Path, split: str | None = None) -> list[str]:
    """The ``src`` of every split (``split``: ``train`` or ``val``, only those of its data set) in the
    template's own ``dataset_configs`` and the data YAMLs it includes (paths as written:
    create_uma_finetune_dataset.py writes them relative to the folder it ran in)."""
    template = Path(template)
    config = yaml.safe_load(template.read_text())
    sections = (f"{split}_dataset",) if split else ("train_dataset", "val_dataset")
    datasets = [dataset for section in sections  # data written into the template itself
                for dataset in ((config.get(section) or {}).get("dataset_configs") or {}).values()]
    for name in _data_defaults(config, template):
        data = yaml.safe_load((template.parent / "data" / f"{name}.yaml").read_text()) or {}
        datasets += [data.get(section) for section in sections]
    return [part["src"] for dataset in datasets if isinstance(dataset, dict)
            for part in (dataset.get("splits") or {}).values() if isinstance(part, dict) and isinstance(part.get("src"), str)]


def check_config(path: Path) -> None:
    """fairchem's own composition of the config (hydra defaults, interpolations, unused keys): a
    PruneError naming the problem instead of a failure in ``fairchem -c``."""
    import os

    from fairchem.core._cli import get_hydra_config_from_yaml

    named = path.with_name(path.name.lstrip(".").removesuffix(".tmp"))
    probe = path.with_name(f".probe-{named.stem}.yaml")  # hydra wants a .yaml name
    previous = os.environ.get("HYDRA_FULL_ERROR")
    try:
        probe.write_text(path.read_text())
        get_hydra_config_from_yaml(str(probe), [])
    except Exception as err:  # hydra / omegaconf raise many types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"fairchem cannot compose the fine-tuning config {named} ({reason})") from None
    finally:
        probe.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


# --- layer-wise learning rates -------------------------------------------------------------------

def block_scales(names: list[str], num_blocks: int, decay: float) -> list[float]:
    """Learning-rate factor of each parameter of a raw eSCN-MD ``HydraModel``: 1 after the last block
    (final norm, heads), ``decay**(b-1-i)`` in block i, ``decay**b`` before the first block
    (embeddings, MoLE routing)."""
    scales = []
    for name in names:
        match = _BLOCK.match(name)
        if match:
            scales.append(decay ** (num_blocks - 1 - int(match.group(1))))
        elif name.startswith(_TOP):
            scales.append(1.0)
        else:
            scales.append(decay ** num_blocks)
    return scales


def finetuning_model(checkpoint_location: str, layer_decay: float = 1.0, **kwargs):
    """fairchem's ``initialize_finetuning_model`` with each parameter tagged with its learning-rate
    factor (:func:`block_scales`) for :func:`adamw_layer_decay` (fairchem's ``optimizer_fn`` gets the
    parameters, not their names)."""
    from fairchem.core.units.mlip_unit.mlip_unit import initialize_finetuning_model

    model = initialize_finetuning_model(checkpoint_location, **kwargs)
    names, params = zip(*model.named_parameters())
    for param, scale in zip(params, block_scales(list(names), len(model.backbone.blocks), layer_decay)):
        param.fairchem_prune_lr_scale = scale
    return model


def adamw_layer_decay(params, lr: float, **kwargs):
    """``torch.optim.AdamW`` with each incoming group (fairchem passes weight-decay / no-decay groups)
    split by the parameters' learning-rate factor: ``lr * factor`` per group."""
    import torch

    groups = params if isinstance(params, list) and params and isinstance(params[0], dict) else [{"params": params}]
    split = []
    for group in groups:
        by_scale: dict[float, list] = {}
        for param in group["params"]:
            if not hasattr(param, "fairchem_prune_lr_scale"):
                raise PruneError("adamw_layer_decay needs the model of fairchem_prune.fairchem2.finetune.finetuning_model "
                                 "(resume a layer-decay run by running fairchem -c on its config again)")
            by_scale.setdefault(param.fairchem_prune_lr_scale, []).append(param)
        for scale in sorted(by_scale):
            split.append({**{k: v for k, v in group.items() if k != "params"}, "params": by_scale[scale],
                          "lr": lr * scale})
    return torch.optim.AdamW(split, lr=lr, **kwargs)


# --- metrics ------------------------------------------------------------------------------------

#: the fields of a MetricsLog record that are not metrics
RECORD_FIELDS = ("split", "step", "time")


def metric_values(record: dict) -> dict:
    """The metrics of a MetricsLog record (its fields but ``split``, ``step`` and ``time``)."""
    return {k: v for k, v in record.items() if k not in RECORD_FIELDS}


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(train records, val records) of a :class:`~fairchem_prune.fairchem2.callbacks.MetricsLog` file, in order."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if r["split"] == "train"], [r for r in records if r["split"] == "val"]
