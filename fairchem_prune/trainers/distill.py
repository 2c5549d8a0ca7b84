"""``trainer: distill``: a block-reduced student learns from the frozen full teacher (paper Sec. 3.3).

fairchem 1.10 hands a trainer only fixed config sections (model, optim, dataset, task, outputs, ...),
so the distillation settings live in ``task.distill``::

    trainer: distill
    task:
      distill:
        teacher_checkpoint: teacher.pt   # model rebuilt from the checkpoint's own config (EMA weights)
        force_weight: 1.0     # L1(student forces, teacher forces)
        energy_weight: 0.0    # L1(student energy, teacher energy)
        n2n_weight: 1.0       # node-to-node: sum over the readout's node features of L1(h_s, h_t)
        e2e_weight: 1.0       # edge-to-edge: the same on its edge features (architectures that have them)
        gt_weight: 0.0        # the ordinary fairchem loss against the labels (0 = pure distillation)
        atom_energy_weight: 0.0   # L1 of each atom's energy contribution (the adapter's atom_energy_module)
        jacobian_weight: 0.0  # L1 of sampled force-Jacobian rows (dF_i/dx, vector-Jacobian products)
        jacobian_rows: 1      # rows per structure and step (one backward pass each, student and teacher)
        max_samples: null     # budget in structures (one epoch of that many); else optim.max_epochs
        sampling: proportional  # across the .lmdb sources of dataset.train.src: proportional | uniform | temperature
        temperature: 2.0
        rattle_fraction: 0.0  # share of the structures whose free atoms get N(0, rattle_sigma^2) noise (Å)
        rattle_sigma: 0.05
        md_fraction: 0.0      # share replaced by the last frame of a short MD driven by the teacher's forces
        md_steps: 5           # velocity-Verlet steps (teacher force evaluations) ...
        md_timestep: 1.0      # ... of this many fs, from velocities drawn at
        md_temperature: 300.0 # this temperature (K)
    model:
      name: <the teacher architecture's reduced model>   # hydra teacher: a hydra student, see below
      num_blocks_kept: 4      # pretrained_checkpoint defaults to the teacher (sliced initialisation)

The compared features are the architecture's (its adapter's ``distillation_features``): the
representation at the readout, at the same position in student and teacher whichever blocks are kept
(e.g. each FinalMLP layer's output, or the final node embedding that the heads read). Matching each
kept block to its source block would pin the student's last block to the teacher's intermediate
features, which its heads were not trained to read. Where an architecture has no edge features,
``e2e_weight`` must be 0.

The loss is  gt_weight * L_gt + force_weight * L_F + energy_weight * L_E + n2n_weight * L_n2n +
e2e_weight * L_e2e + atom_energy_weight * L_Ea + jacobian_weight * L_J, every L1 a mean over elements
across all ranks (fairchem's ``DDPLoss``). The Jacobian term (:mod:`~fairchem_prune.trainers.jacobian`)
and the teacher-labelled augmentation (:mod:`~fairchem_prune.augmentation`, which needs
gt_weight 0) act in training steps only; their random draws follow the run's seed and step. Outputs
are compared in the normalised space the teacher was trained in: the student takes the teacher
checkpoint's normalizers and element references. The teacher is frozen, in eval mode, run on the same
batch, device and autocast precision (under ``no_grad`` unless its forces are energy gradients), and
replicated on each rank, never wrapped in DDP. It replays the random draws of the student's pass, so
that random edge frames (drawn by some architectures in each pass) are the same in both. It builds its
graphs as the student does (``use_pbc_single``, whatever its own config says); a batch mixing periodic
and non-periodic structures is refused unless the student builds each structure's graph on its own
(:mod:`fairchem_prune.graphs`).

A hydra teacher takes a hydra student (``name: hydra``, ``backbone: {model: <reduced backbone>,
num_blocks_kept: k}``); its heads default to the teacher's and start from the teacher's weights.
Checkpoints hold the student only, as an ordinary checkpoint of the reduced model with a
self-contained config.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
from fairchem.core.common import distutils
from torch.nn.parallel import DistributedDataParallel
from fairchem.core.common.registry import registry
from fairchem.core.modules.loss import DDPLoss
from fairchem.core.trainers import OCPTrainer

from fairchem_prune import architectures
from fairchem_prune.checkpoints import load_source
from fairchem_prune.errors import PruneError
from fairchem_prune.graphs import build_graphs_per_structure, builds_graphs_per_structure, check_batch_graphs
from fairchem_prune.models import check_training_data
from fairchem_prune.augmentation import Augmentation, step_generator
from fairchem_prune.trainers.data_paths import ChecksDataPaths
from fairchem_prune.trainers.jacobian import force_jacobian_rows, sample_rows
from fairchem_prune.trainers.preemption import ResumesAtCompletedStep
from fairchem_prune.trainers.sampling import SAMPLING_CHOICES, SourceBalancedBatchSampler, source_ids, source_probabilities

WEIGHTS = ("force_weight", "energy_weight", "n2n_weight", "e2e_weight", "gt_weight", "atom_energy_weight",
           "jacobian_weight")


@dataclass(kw_only=True)
class DistillSettings(Augmentation):
    """The ``task.distill`` section (see the module docstring); ``rattle_*`` and ``md_*``: :class:`Augmentation`'s."""

    teacher_checkpoint: str
    force_weight: float = 1.0
    energy_weight: float = 0.0
    n2n_weight: float = 1.0
    e2e_weight: float = 1.0
    gt_weight: float = 0.0
    atom_energy_weight: float = 0.0
    jacobian_weight: float = 0.0
    jacobian_rows: int = 1
    max_samples: int | None = None
    sampling: str = "proportional"
    temperature: float = 2.0

    @classmethod
    def from_task(cls, task: dict) -> DistillSettings:
        section = task.get("distill")
        if not isinstance(section, dict) or not section.get("teacher_checkpoint"):
            raise PruneError("trainer: distill needs a task.distill section with teacher_checkpoint: PATH")
        unknown = set(section) - {f.name for f in fields(cls)}
        if unknown:
            raise PruneError(f"task.distill has unknown keys {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        settings = cls(**section)
        if any(getattr(settings, w) < 0 for w in WEIGHTS):
            raise PruneError(f"task.distill weights must be >= 0, got {[getattr(settings, w) for w in WEIGHTS]}")
        if all(getattr(settings, w) == 0 for w in WEIGHTS):
            raise PruneError(f"task.distill: all loss weights ({', '.join(WEIGHTS)}) are 0; nothing to train on")
        if settings.sampling not in SAMPLING_CHOICES:
            raise PruneError(f"task.distill.sampling must be one of {SAMPLING_CHOICES}, got {settings.sampling!r}")
        if settings.max_samples is not None and settings.max_samples < 1:
            raise PruneError(f"task.distill.max_samples must be a positive number of structures, got {settings.max_samples}")
        settings.check(lambda key: f"task.distill.{key}")
        if settings.jacobian_rows <= 0:
            raise PruneError(f"task.distill.jacobian_rows must be positive, got {settings.jacobian_rows}")
        if settings.augments and settings.gt_weight:
            raise PruneError("task.distill: rattled or teacher-MD structures have no reference labels; with "
                             "rattle_fraction or md_fraction > 0 set gt_weight: 0")
        return settings


def _flat_outputs(raw: dict) -> dict:
    """A model's outputs by property: a hydra model without ``pass_through_head_outputs`` nests them
    by head (``{head: {property: tensor}}``)."""
    flat = {}
    for key, value in raw.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def _rng_state(device) -> tuple:
    """The CPU random state and, on CUDA, the device's."""
    cuda = torch.device(device).type == "cuda"
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None


@contextmanager
def _replayed_rng(state: tuple, device) -> Iterator[None]:
    """Run the block from random state ``state`` (:func:`_rng_state`); afterwards the random stream
    continues as if the block had not run."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=[torch.device(device)] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


@registry.register_trainer("distill")
class DistillTrainer(ChecksDataPaths, ResumesAtCompletedStep, OCPTrainer):
    """fairchem's ``OCPTrainer`` with a frozen teacher and the distillation loss."""

    # === set-up: teacher, student, normalizers, sampler ===
    def load_model(self) -> None:
        self.distill = DistillSettings.from_task(self.config["task"])
        source = load_source(self.distill.teacher_checkpoint)
        architecture = self._architecture = source.architecture
        model_config = self.config["model"]
        student_core = self._student_core_config(source, model_config)
        if self.distill.e2e_weight and not architecture.has_edge_features:
            raise PruneError(f"task.distill.e2e_weight: the edge-to-edge term is not defined for {architecture.label} "
                             "(it has no edge features); set task.distill.e2e_weight: 0")
        student_core.setdefault("pretrained_checkpoint", self.distill.teacher_checkpoint)
        super().load_model()
        if isinstance(self.model, DistributedDataParallel):
            # layers that no distillation term reaches (e.g. out_energy without energy terms) get no
            # gradient; fairchem's plain DDP wrapper rejects that
            module = self.model.module
            del self.model
            self.model = DistributedDataParallel(module, find_unused_parameters=True)

        student, teacher = self._unwrapped_model, source.model
        core = architectures.core_of(student)
        student_blocks, teacher_blocks = architecture.num_blocks(core), source.num_blocks
        if student_blocks > teacher_blocks:
            raise PruneError(f"the student keeps {student_blocks} blocks but the teacher has {teacher_blocks}")
        if source.is_hydra:
            self._load_teacher_heads(source, core.kept_blocks)
        teacher_widths = architecture.feature_widths(teacher)
        for part, widths in architecture.feature_widths(student).items():
            if widths != teacher_widths[part]:
                raise PruneError(f"student and teacher {part} differ; the student must be reduced from the teacher")
        if self.distill.atom_energy_weight:
            for model in (student, teacher):
                with architecture.atom_energies(model):  # a one-line error where the adapter names none
                    pass
        if self.distill.e2e_weight and not architecture.has_edge_branch(student):
            raise PruneError(f"task.distill.e2e_weight > 0 needs a {architecture.label} student with edge features "
                             "(a readout with an edge branch; e.g. direct forces); set task.distill.e2e_weight: 0")
        # the teacher builds its graphs as the student does, whatever its own config said
        build_graphs_per_structure(teacher, builds_graphs_per_structure(student))
        self.teacher = teacher.to(self.device).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self._teacher_checkpoint = source.checkpoint
        self._l1 = DDPLoss("mae", "mean")
        logging.info(f"distill: teacher {source.path} ({teacher_blocks} blocks), "
                     f"student keeps {core.kept_blocks} ({sum(p.numel() for p in student.parameters()):,} parameters)")

    def _student_core_config(self, source, model_config: dict) -> dict:
        """The student's reduced model (monolithic) or backbone (hydra) section, checked against the
        teacher; a hydra student without heads gets the teacher's."""
        architecture = source.architecture
        if not source.is_hydra:
            if model_config.get("name") != architecture.reduced_model:
                raise PruneError(f"the distill student must be model name {architecture.reduced_model} for the "
                                 f"{architecture.label} teacher {source.path}, got {model_config.get('name')!r}")
            return model_config
        backbone = model_config.get("backbone")
        if model_config.get("name") != "hydra" or not isinstance(backbone, dict) \
                or backbone.get("model") != architecture.reduced_backbone:
            raise PruneError(f"the hydra teacher {source.path} needs a hydra student with backbone model "
                             f"{architecture.reduced_backbone}; got model {model_config.get('name')!r}")
        model_config.setdefault("heads", copy.deepcopy(source.model_config["heads"]))
        for key in ("pass_through_head_outputs", "otf_graph"):
            if key in source.model_config:
                model_config.setdefault(key, source.model_config[key])
        return backbone

    def _load_teacher_heads(self, source, kept: list[int]) -> None:
        """A hydra student starts with the teacher's heads (sliced where their shape depends on the blocks)."""
        weights = source.architecture.slice_state_dict(source.state_dict(), source.num_blocks, kept)
        heads = {k: v for k, v in weights.items() if k.startswith("output_heads.")}
        result = self._unwrapped_model.load_state_dict(heads, strict=False)
        if result.unexpected_keys:
            raise PruneError(f"the student's heads do not match the teacher's ({result.unexpected_keys[:3]}); "
                             "leave model.heads out to use the teacher's")

    def load_references_and_normalizers(self) -> None:
        """Exactly the teacher's normalizers and element references, none where it has none (the
        outputs are compared in its normalised space, as ``OCPCalculator`` restores it); the config's
        ``transforms`` are not fitted: a student fitted to other statistics than its teacher would
        learn the teacher's raw outputs in the wrong units."""
        from fairchem.core.modules.normalization.element_references import create_element_references
        from fairchem.core.modules.normalization.normalizer import create_normalizer

        checkpoint = self._teacher_checkpoint
        self.normalizers, self.elementrefs = {}, {}
        renamed = {"target": "energy", "grad_target": "forces"}
        for key, state in checkpoint.get("normalizers", {}).items():
            self.normalizers[renamed.get(key, key)] = create_normalizer(state_dict=state).to(self.device)
        for key, state in checkpoint.get("elementrefs", {}).items():
            self.elementrefs[key] = create_element_references(state_dict=state).to(self.device)

    def load_datasets(self) -> None:
        super().load_datasets()
        check_training_data(self._unwrapped_model, self.train_dataset)
        settings = self.distill
        if self.train_loader is None or (settings.sampling == "proportional" and settings.max_samples is None):
            return
        batch_size = self.config["optim"].get("batch_size", 1)
        world = distutils.get_world_size()
        sources, names = source_ids(self.train_dataset)
        probabilities = source_probabilities(
            [int((sources == s).sum()) for s in range(len(names))], settings.sampling, settings.temperature
        )
        samples = settings.max_samples or len(self.train_dataset)
        if settings.max_samples is not None:
            self.config["optim"]["max_epochs"] = 1  # the budget is one epoch of max_samples structures
        self.train_sampler = SourceBalancedBatchSampler(
            sources, batch_size, world, distutils.get_rank(), math.ceil(samples / (batch_size * world)),
            probabilities, seed=self.config["cmd"]["seed"] or 0,
        )
        self.train_loader = self.get_dataloader(self.train_dataset, self.train_sampler)
        logging.info("distill: sources " + ", ".join(f"{n} p={p:.3f}" for n, p in zip(names, probabilities))
                     + f"; {len(self.train_sampler)} steps per epoch; max_epochs: {self.config['optim']['max_epochs']}")

    # === one step: student and teacher on the same batch ===
    def _step_generator(self) -> torch.Generator:
        """The random stream of this step's augmentation and Jacobian rows: the same after a resume,
        different on each rank."""
        return step_generator(int(self.config["cmd"].get("seed") or 0), self.step, distutils.get_rank())

    def _teacher_forces(self, batch) -> torch.Tensor:
        """The teacher's forces in eV/Å (N_atoms, 3), detached: what teacher MD integrates."""
        with torch.set_grad_enabled(self._architecture.forces_are_gradients(self.teacher)):
            forces = _flat_outputs(self.teacher(batch.clone()))["forces"].detach()
        return self._denorm_preds("forces", forces.view(-1, 3), batch)

    def _teacher_forward(self, batch, rng: tuple, rows: list[torch.Tensor]) -> dict:
        """Teacher outputs (energy (B, 1), forces (|V|, 3)), (node, edge) features, per-atom energies and
        the force-Jacobian ``rows`` (each (|V|, 3)), detached, from the random state ``rng`` that the
        student's pass started from."""
        settings = self.distill
        grad = self._architecture.forces_are_gradients(self.teacher) or bool(rows)
        differentiable = self._architecture.differentiable_forces(self.teacher) if rows else contextlib.nullcontext()
        with (torch.set_grad_enabled(grad), _replayed_rng(rng, self.device), differentiable,
              self._architecture.distillation_features(self.teacher) as (node, edge),
              self._optional_atom_energies(self.teacher) as atom_energies):
            raw = _flat_outputs(self.teacher(batch))
            jacobian = [force_jacobian_rows(raw["forces"], batch.pos, r).detach() for r in rows]
        sizes = {"energy": batch.natoms.numel(), "forces": int(batch.natoms.sum())}
        return {"out": {key: raw[key].detach().view(sizes[key], -1) for key in sizes if key in raw},
                "features": ([h.detach() for h in node], [m.detach() for m in edge]),
                "atom_energies": [e.detach() for e in atom_energies] if settings.atom_energy_weight else None,
                "jacobian": jacobian}

    @contextmanager
    def _optional_atom_energies(self, model) -> Iterator[list]:
        if self.distill.atom_energy_weight:
            with self._architecture.atom_energies(model) as energies:
                yield energies
        else:
            yield []

    def _forward(self, batch):
        check_batch_graphs(self._unwrapped_model, batch, "distill student")
        batch = batch.to(self.device)
        training = self._unwrapped_model.training
        generator = self._step_generator()
        shift = None
        if training and self.distill.augments:
            original = batch.pos
            batch = self.distill.apply(batch, self._teacher_forces, generator)
            shift = (batch.pos - original).norm(dim=1).mean().detach()
        rows = []
        if training and self.distill.jacobian_weight:  # training steps only: validation runs without gradients
            free = self._free_atoms(batch)
            rows = [sample_rows(batch, free, generator) for _ in range(self.distill.jacobian_rows)]
            batch.pos.requires_grad_(True)
        teacher_batch = batch.clone()  # its own positions: models that take gradients may replace them
        teacher_batch.pos = batch.pos.detach().clone().requires_grad_(bool(rows))
        rng = _rng_state(self.device)
        with (self._architecture.distillation_features(self._unwrapped_model) as student_features,
              self._optional_atom_energies(self._unwrapped_model) as atom_energies):
            out = super()._forward(batch)
        try:
            jacobian = [force_jacobian_rows(out["forces"], batch.pos, r, create_graph=True) for r in rows]
            teacher = self._teacher_forward(teacher_batch, rng, rows)
        except RuntimeError as err:
            if "does not require grad" not in str(err) and "not have been used" not in str(err):
                raise
            raise PruneError(f"task.distill.jacobian_weight: the {self._architecture.label} forces of the student or "
                             "the frozen teacher are not differentiable with respect to the positions; set "
                             "jacobian_weight: 0") from None
        self._step = {"student": student_features, "teacher": teacher["features"], "teacher_out": teacher["out"],
                      "student_atom_energies": list(atom_energies), "teacher_atom_energies": teacher["atom_energies"],
                      "student_jacobian": jacobian, "teacher_jacobian": teacher["jacobian"], "shift": shift}
        return out

    def _free_atoms(self, batch) -> torch.Tensor:
        if self.output_targets.get("forces", {}).get("train_on_free_atoms", False):
            return batch.fixed == 0
        return torch.ones_like(batch.fixed, dtype=torch.bool)

    def _compute_loss(self, out, batch) -> torch.Tensor:
        step, settings = self._step, self.distill
        mae = lambda a, b: self._l1(a, b, natoms=batch.natoms)  # noqa: E731
        terms: dict[str, torch.Tensor] = {}
        if settings.gt_weight:
            terms["gt"] = super()._compute_loss(out, batch)
        if settings.force_weight:
            free = self._free_atoms(batch)
            terms["forces"] = mae(out["forces"][free], step["teacher_out"]["forces"][free])
        if settings.energy_weight:
            terms["energy"] = mae(out["energy"], step["teacher_out"]["energy"])
        if settings.n2n_weight:
            terms["n2n"] = sum(mae(s, t) for s, t in zip(step["student"][0], step["teacher"][0]))
        if settings.e2e_weight:
            pairs = list(zip(step["student"][1], step["teacher"][1]))
            if pairs[0][0].shape != pairs[0][1].shape:
                raise PruneError("e2e distillation needs the teacher's edge graph: keep the student's cutoffs and max_neighbors")
            terms["e2e"] = sum(mae(s, t) for s, t in pairs)
        if settings.atom_energy_weight:
            terms["atom_energy"] = mae(step["student_atom_energies"][0], step["teacher_atom_energies"][0])
        if step["student_jacobian"]:
            pairs = list(zip(step["student_jacobian"], step["teacher_jacobian"]))
            terms["jacobian"] = sum(mae(s, t) for s, t in pairs) / len(pairs)
        weights = {"gt": settings.gt_weight, "forces": settings.force_weight, "energy": settings.energy_weight,
                   "n2n": settings.n2n_weight, "e2e": settings.e2e_weight, "atom_energy": settings.atom_energy_weight,
                   "jacobian": settings.jacobian_weight}
        total = sum(weights[name] * value for name, value in terms.items())
        logged = {f"distill_{name}": value for name, value in terms.items()}
        logged["distill_loss"] = total
        if step["shift"] is not None:  # mean displacement of the atoms by augmentation, Å
            logged["augment_shift"] = step["shift"]
        # DDPLoss values are rank-local shares of the global mean: average them for logging
        self._step["logged"] = {k: float(distutils.all_reduce(v.detach().clone(), average=True)) for k, v in logged.items()}
        return total

    def _compute_metrics(self, out, batch, evaluator, metrics=None):
        """fairchem's metrics against the labels, each loss term, and the agreement with the
        teacher (``teacher_forces_mae`` in eV/Å, ``teacher_energy_mae`` in eV)."""
        metrics = super()._compute_metrics(out, batch, evaluator, metrics)
        for name, value in self._step.get("logged", {}).items():
            metrics = evaluator.update(name, value, metrics)
        teacher_out = self._step["teacher_out"]
        free = self._free_atoms(batch)
        for key, select in (("forces", free), ("energy", slice(None))):
            if key in out and key in teacher_out:
                diff = (self._denorm_preds(key, out[key].detach(), batch)
                        - self._denorm_preds(key, teacher_out[key], batch))[select].abs()
                metrics = evaluator.update(f"teacher_{key}_mae", {"metric": diff.mean().item(),
                                                                  "total": diff.sum().item(), "numel": diff.numel()}, metrics)
        return metrics

    # === checkpoints: the student only, as an ordinary checkpoint of the reduced model ===
    def _ordinary_config(self) -> dict:
        config = copy.deepcopy(self.config)
        core = architectures.core_of(self._unwrapped_model)
        config["model"] = self._architecture.with_core(config["model"], core.resolved_config)
        config["task"].pop("distill", None)
        return config

    def save(self, *args, **kwargs):
        config, self.config = self.config, self._ordinary_config()
        try:
            return super().save(*args, **kwargs)
        finally:
            self.config = config
