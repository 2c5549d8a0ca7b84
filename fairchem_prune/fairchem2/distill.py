"""Knowledge distillation of a reduced UMA / eSEN in fairchem 2's own training loop.

:class:`DistillTrainEvalUnit` is fairchem's ``MLIPTrainEvalUnit`` (named by a ``fairchem -c`` config's
``runner.train_eval_unit._target_``) with two changes to each training step; everything else (data,
loss functions, optimiser and schedule, EMA, validation, checkpoints, resuming, the inference
checkpoint it writes) is fairchem's:

* **Targets.** Every task's target, in training and validation (which so measures the distillation
  gap, student against teacher), is the frozen teacher's prediction for the batch: fairchem's
  ``MLIPPredictUnit`` of the teacher checkpoint (EMA weights, ``batch`` inference settings: what
  ``FAIRChemCalculator`` predicts, in eV, eV/Å and eV/Å^3, element references undone), each structure
  by its own dataset's task. fairchem's ``compute_loss`` then applies each task's element
  references, normaliser, free-atom mask and loss to them, so the student learns the teacher's
  energies, forces and stress where the tasks train them, with the tasks' own weights.
* **Node-to-node.** The L1 distance between the student's and the teacher's final node embeddings
  (the backbone's ``node_embedding``, ``(N_atoms, (lmax+1)^2, C)``, the only features the heads read),
  averaged over the irreps matched and the channels, then over each structure's atoms, then over
  the structures, times ``n2n_weight``. ``node_irreps="scalars"`` matches the l = 0 row, the input of
  the energy heads (a conserving model's forces and stress are its energy's gradients); ``"all"``
  matches every row (direct-force heads also read l = 1). The term is one more fairchem task
  (:data:`N2N_TASK`, system level, target 0), so that ``DDPMTLoss`` reduces it across ranks as it
  reduces the others. UMA has no edge features at the readout (its heads read node embeddings only),
  so there is no edge-to-edge term.
* **Teacher-labelled structures** (the 1.x trainer's options, :mod:`fairchem_prune.augmentation`): in
  each training step, before the teacher labels the batch, the free atoms of a random share
  (``rattle_fraction``) of its structures are displaced by N(0, ``rattle_sigma``^2) Å, and a random
  share (``md_fraction``) is replaced by the last frame of ``md_steps`` velocity-Verlet steps under
  the teacher's forces; the random stream is a function of the seed, the step and the rank, so a
  resumed run draws what the uninterrupted one would have.

The 1.x trainer's force-Jacobian rows need the teacher's forces with their graph (a second derivative
of a conserving model's energy), which fairchem's ``MLIPPredictUnit`` does not keep; its per-atom
energies are not matched either. Both stay 1.x options.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from fairchem.core.units.mlip_unit.mlip_unit import MLIPTrainEvalUnit

from fairchem_prune.augmentation import Augmentation, step_generator
from fairchem_prune.errors import PruneError
from fairchem_prune.fairchem2 import escn_md

#: the node-to-node term's task: its name in the batch and the student's output, and its property
N2N_TASK = ("distill_node_to_node", "l1")
NODE_IRREPS = ("scalars", "all")
DISTILL_UNIT = "fairchem_prune.fairchem2.distill.DistillTrainEvalUnit"
STUDENT_MODEL = "fairchem_prune.fairchem2.distill.student_model"
COLLATER = "fairchem_prune.fairchem2.distill.TaskLabels"
#: the 1.x trainer's source balancing as fairchem 2's ``combined_dataset_config.sampling`` (each dataset
#: drawn in proportion to its size, equally, or to size^(1/T))
SAMPLING = {"proportional": {"type": "temperature", "temperature": 1.0}, "uniform": {"type": "balanced"},
            "temperature": {"type": "temperature"}}


def budget_steps(samples: int, batch_size: int) -> int:
    """The steps of batches of ``batch_size`` that see ``samples`` structures (the last batch may overlap)."""
    return math.ceil(samples / batch_size)


def check_settings(n2n_weight: float, node_irreps: str, augmentation: Augmentation | None = None) -> None:
    """PruneError unless ``n2n_weight`` >= 0, ``node_irreps`` is one of :data:`NODE_IRREPS` and the
    ``augmentation`` is in range."""
    if node_irreps not in NODE_IRREPS:
        raise PruneError(f"node_irreps (--node-irreps) must be one of {', '.join(NODE_IRREPS)}, got {node_irreps!r}")
    if n2n_weight < 0:
        raise PruneError(f"n2n_weight (--n2n-weight) must be at least 0, got {n2n_weight}")
    if augmentation is not None:
        augmentation.check(lambda key: f"--{key.replace('_', '-')}")


def node_distance(student: torch.Tensor, teacher: torch.Tensor, batch: torch.Tensor, num_systems: int,
                  irreps: str = "scalars") -> torch.Tensor:
    """``(num_systems, 1)``: per structure, the mean over its atoms of the L1 distance (mean over the
    matched irreps and channels) between node embeddings ``(N_atoms, (lmax+1)^2, C)``; ``batch``:
    ``(N_atoms,)`` structure index of each atom; ``irreps``: one of :data:`NODE_IRREPS`."""
    if irreps == "scalars":
        student, teacher = student[:, :1], teacher[:, :1]
    per_atom = (student - teacher.to(student.dtype)).abs().mean(dim=(1, 2))
    total = per_atom.new_zeros(num_systems).index_add_(0, batch, per_atom)
    count = per_atom.new_zeros(num_systems).index_add_(0, batch, torch.ones_like(per_atom))
    return (total / count.clamp(min=1)).unsqueeze(1)


def student_model(checkpoint_location: str, overrides: dict | None = None):
    """The student a distillation trains: the ``HydraModel`` of ``checkpoint_location`` (``overrides``
    merged into its config) with its EMA weights where it has them (the weights its teacher's
    calculator runs: a sliced checkpoint starts as the teacher's first blocks), else its raw ones;
    ``finetune_model_full_config`` set as fairchem's ``initialize_finetuning_model`` sets it, so that
    the run's inference checkpoint holds this model's config."""
    from fairchem.core.units.mlip_unit.utils import load_inference_model

    from fairchem_prune.fairchem2.checkpoints import has_ema, hydra_model, read_inference_checkpoint

    ema = has_ema(read_inference_checkpoint(checkpoint_location))
    model, checkpoint = load_inference_model(checkpoint_location, overrides, use_ema=ema)
    model = hydra_model(model)
    model.finetune_model_full_config = checkpoint.model_config
    return model


class _Capture:
    """A forward hook keeping a backbone's last ``node_embedding``."""

    def __init__(self, backbone: torch.nn.Module):
        self.nodes: torch.Tensor | None = None
        backbone.register_forward_hook(self)

    def __call__(self, module, inputs, output) -> None:
        self.nodes = output["node_embedding"]


class DistillTrainEvalUnit(MLIPTrainEvalUnit):
    """``MLIPTrainEvalUnit`` distilling its model (the student, e.g. a sliced checkpoint) from
    ``teacher_checkpoint`` (a fairchem 2 inference checkpoint of the same tasks); see the module
    docstring. ``n2n_weight``: coefficient of the node-to-node term (0: targets only);
    ``node_irreps``: ``scalars`` or ``all``; ``augmentation``: the fields of
    :class:`~fairchem_prune.augmentation.Augmentation`, drawn from ``seed``. The other arguments are
    ``MLIPTrainEvalUnit``'s."""

    def __init__(self, *args, teacher_checkpoint: str, n2n_weight: float = 1.0, node_irreps: str = "scalars",
                 augmentation: dict | None = None, seed: int = 0, **kwargs):
        from fairchem.core.common.distutils import get_device_for_local_rank
        from fairchem.core.modules.loss import DDPMTLoss, MAELoss
        from fairchem.core.modules.normalization.normalizer import Normalizer
        from fairchem.core.units.mlip_unit import load_predict_unit
        from fairchem.core.units.mlip_unit.mlip_unit import OutputSpec, Task

        from fairchem_prune.fairchem2.checkpoints import hydra_model

        self.augmentation = Augmentation(**(augmentation or {}))
        self.seed = seed
        check_settings(n2n_weight, node_irreps, self.augmentation)
        super().__init__(*args, **kwargs)
        device = get_device_for_local_rank()
        self.teacher = load_predict_unit(str(teacher_checkpoint), inference_settings="batch", device=device)
        known = self.teacher.dataset_to_tasks
        for task in self.tasks:
            missing = [d for d in task.datasets if task.property not in {t.property for t in known.get(d, [])}]
            if missing:
                raise PruneError(f"the teacher {teacher_checkpoint} predicts no {task.property} for the dataset(s) "
                                 f"{', '.join(missing)} of task {task.name}; distil on the teacher's datasets")
        self.node_irreps, self.n2n_weight = node_irreps, float(n2n_weight)
        if self.n2n_weight > 0:
            self._teacher_nodes = _Capture(escn_md.backbone_of(self.teacher.model))
            self._student_nodes = _Capture(escn_md.backbone_of(self.model))
            datasets = sorted({d for task in self.tasks for d in task.datasets})
            self.tasks = [*self.tasks, Task(
                name=N2N_TASK[0], level="system", property=N2N_TASK[1], out_spec=OutputSpec(dim=[1], dtype="float32"),
                normalizer=Normalizer(mean=0.0, rmsd=1.0), datasets=datasets,
                loss_fn=DDPMTLoss(loss_fn=MAELoss(), coefficient=self.n2n_weight))]
            hydra_model(self.model).register_forward_hook(self._add_node_distance)

    def teacher_targets(self, data):
        """A copy of the batch ``data`` whose task targets are the teacher's predictions (detached, in
        the target's dtype) on the structures of the task's datasets (the others keep the collater's
        inf, which masks them out of the task's loss), and, with the node-to-node term, its target 0."""
        predictions = self.teacher.predict(data.clone())
        data = data.clone()
        known = self.teacher.dataset_to_tasks
        for task in self.tasks:
            if task.name == N2N_TASK[0]:
                data[task.name] = torch.zeros(len(data.natoms), 1, dtype=data.pos.dtype, device=data.pos.device)
                continue
            target = data[task.name].clone()
            # the teacher's rows: one per structure (system) or atom whose dataset has this property
            has = torch.tensor([task.property in {t.property for t in known[d]} for d in data.dataset],
                               device=target.device)
            ours = torch.tensor([d in task.datasets for d in data.dataset], device=target.device)
            if task.level == "atom":
                has, ours = has[data.batch], ours[data.batch]
            teacher = torch.full_like(target, torch.inf)
            teacher[has] = predictions[task.property].detach().to(target.device, target.dtype).reshape(teacher[has].shape)
            target[ours] = teacher[ours]
            data[task.name] = target
        return data

    def train_step(self, state, data) -> None:
        from fairchem.core.common.distutils import get_rank

        if self.augmentation.augments:
            generator = step_generator(self.seed, self.train_progress.num_steps_completed, get_rank())
            data = self.augmentation.apply(data, self._teacher_forces, generator)
        super().train_step(state, self.teacher_targets(data))

    def _teacher_forces(self, data) -> torch.Tensor:
        """The teacher's forces (N_atoms, 3) in eV/Å, detached: what teacher MD integrates."""
        return self.teacher.predict(data.clone())["forces"].detach().to(data.pos.device, data.pos.dtype)

    def eval_step(self, state, data) -> None:
        """fairchem's validation of the student (its EMA) against the teacher: the distillation gap."""
        super().eval_step(state, self.teacher_targets(data))

    def _add_node_distance(self, module, inputs, output):
        """Forward hook of the student: its node-to-node distance as the output of :data:`N2N_TASK`
        (only in training, after the teacher has seen the same batch)."""
        teacher = self._teacher_nodes.nodes
        if not module.training or teacher is None:
            return output
        data = inputs[0]
        student = self._student_nodes.nodes
        if teacher.shape != student.shape:
            raise PruneError(f"the teacher's node embedding {tuple(teacher.shape)} and the student's "
                             f"{tuple(student.shape)} differ; distil a student sliced from the teacher")
        output[N2N_TASK[0]] = {N2N_TASK[1]: node_distance(student, teacher.detach(), data["batch"],
                                                         len(data["natoms"]), self.node_irreps)}
        self._teacher_nodes.nodes = None
        return output


def _shape_of(model_config: dict, where) -> dict:
    """A model's config but for its block count (``num_layers``, ``layers_moe``): what a student sliced
    from a teacher shares with it."""
    backbone = {k: v for k, v in escn_md.backbone_config(model_config, str(where)).items()
                if k not in ("num_layers", "layers_moe")}
    return {**copy.deepcopy(dict(model_config)), "backbone": backbone}


class TaskLabels:
    """The collate function of a distillation run: fairchem's ``mt_collater_adapter`` of ``tasks`` (the
    teacher's), after giving each structure every task of its dataset under the task's name: its
    label of the task's property (``energy``, ``forces``, ``stress``) where it has one, else inf
    (fairchem's "no label"; the teacher gives every target); the labels under their own names are
    dropped. So the distillation data need no labels and no ``key_mapping``, and labelled and
    unlabelled structures batch together."""

    def __init__(self, tasks: list, **kwargs):
        from fairchem.core.units.mlip_unit.mlip_unit import filter_inference_only_tasks, mt_collater_adapter

        self.tasks = filter_inference_only_tasks(tasks)
        self.collate = mt_collater_adapter(tasks, **kwargs)

    def __call__(self, data_list: list):
        from fairchem_prune.fairchem2.data import LABELS, put_task_labels

        names = {task.name for task in self.tasks}
        for data in data_list:  # fresh objects of the dataset (fairchem's collater clones them next)
            put_task_labels(data, [task for task in self.tasks if data.dataset in task.datasets])
            for label in LABELS:  # now under the task names; a structure without it would not batch with one with it
                if label in data and label not in names:
                    del data[label]
        return self.collate(data_list)


@dataclass
class DistillSettings:
    """What turns a fine-tuning config of a student into its distillation from ``teacher``."""

    teacher: Path
    n2n_weight: float = 1.0
    node_irreps: str = "scalars"
    #: the budget in structures (steps = samples / batch size); None: the config's epochs or steps
    samples: int | None = None
    #: how the template's datasets are drawn (None: as the template says; see :data:`SAMPLING`)
    sampling: str | None = None
    temperature: float = 2.0
    augmentation: Augmentation = field(default_factory=Augmentation)
    #: seed of the augmentation's draws
    seed: int = 0

    def apply(self, config: dict) -> str:
        """Make the fine-tuning ``config`` (:func:`~fairchem_prune.fairchem2.finetune.write_finetune_config`'s,
        changed in place) this distillation: the unit :class:`DistillTrainEvalUnit`; the teacher's
        tasks (``distill_tasks``: its normalisers and element references, which the student's
        heads were trained with) for the unit and both loaders (:class:`TaskLabels`); the student of
        :func:`student_model`, with its own heads (the template's new heads dropped) and graph settings
        (only ``otf_graph`` and the data's periodicity set, as the teacher's ``MLIPPredictUnit`` has
        them). Returns the config header's description."""
        from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint
        from fairchem_prune.fairchem2.finetune import FAIRCHEM_FINETUNING_MODEL

        check_settings(self.n2n_weight, self.node_irreps, self.augmentation)
        self._apply_budget(config)
        teacher = read_inference_checkpoint(self.teacher)
        unit = config["runner"]["train_eval_unit"]
        student_path = unit["model"]["checkpoint_location"]
        if _shape_of(read_inference_checkpoint(student_path).model_config, student_path) != \
                _shape_of(teacher.model_config, self.teacher):
            raise PruneError(f"the student {student_path} is not the teacher {self.teacher} with fewer blocks (their "
                             "models differ in more than num_layers); slice the student from this teacher")
        unit.update({"_target_": DISTILL_UNIT, "teacher_checkpoint": str(Path(self.teacher).resolve()),
                     "n2n_weight": float(self.n2n_weight), "node_irreps": self.node_irreps, "tasks": "${distill_tasks}"})
        if self.augmentation != Augmentation():
            unit.update(augmentation=asdict(self.augmentation), seed=self.seed)
        model = unit["model"]
        if model.get("_target_") != FAIRCHEM_FINETUNING_MODEL:
            raise PruneError("--layer-decay is for fine-tuning; a distillation trains every block at one rate")
        unit["model"] = {"_target_": STUDENT_MODEL, "checkpoint_location": model["checkpoint_location"],
                         "overrides": {"backbone": {"otf_graph": True, "always_use_pbc": False}}}
        config.pop("max_neighbors", None)  # the template's variable of the overrides replaced
        config["distill_tasks"] = copy.deepcopy(teacher.tasks_config)
        for loader in ("train_dataloader", "eval_dataloader"):
            collate = config.get(loader, {}).get("collate_fn")
            if not isinstance(collate, dict):
                raise PruneError(f"the fine-tuning template has no {loader}.collate_fn; give the template of "
                                 "create_uma_finetune_dataset.py")
            collate.update({"_target_": COLLATER, "tasks": "${distill_tasks}"})
        return f"distillation (teacher {Path(self.teacher).resolve()})"

    def _apply_budget(self, config: dict) -> None:
        """``--samples`` as the run's steps, ``--sampling`` as the template's ``combined_dataset_config``."""
        from fairchem_prune.fairchem2.finetune import config_value, set_length

        if self.sampling is not None:
            if self.sampling not in SAMPLING:
                raise PruneError(f"--sampling must be one of {', '.join(SAMPLING)}, got {self.sampling!r}")
            if self.temperature < 1:
                raise PruneError(f"--temperature must be at least 1 (1: proportional), got {self.temperature}")
            combined = config_value(config, "train_dataset.combined_dataset_config")
            if not isinstance(combined, dict):
                raise PruneError("the template's train_dataset has no combined_dataset_config (fairchem's "
                                 "create_concat_dataset), which --sampling sets")
            combined["sampling"] = {**SAMPLING[self.sampling], **({"temperature": float(self.temperature)}
                                                                  if self.sampling == "temperature" else {})}
        if self.samples is not None:
            if self.samples < 1:
                raise PruneError(f"--samples must be at least 1, got {self.samples}")
            batch = config.get("batch_size", config_value(config, "train_dataloader.batch_sampler_fn.batch_size"))
            if not isinstance(batch, int):
                raise PruneError(f"the template's batch size is {batch!r}, not a number; give --batch-size")
            set_length(config, None, budget_steps(self.samples, batch))
