"""``trainer: distill``: a block-reduced student learns from the frozen full teacher (paper Sec. 3.3).

fairchem 1.10 hands a trainer only fixed config sections (model, optim, dataset, task, outputs, ...),
so the distillation settings live in ``task.distill``::

    trainer: distill
    task:
      distill:
        teacher_checkpoint: teacher.pt   # model rebuilt from the checkpoint's own config (EMA weights)
        force_weight: 1.0     # L1(student forces, teacher forces)
        energy_weight: 0.0    # L1(student energy, teacher energy)
        n2n_weight: 1.0       # node-to-node: sum over FinalMLP layers l of L1(h_s^l, h_t^l), node (energy) branch
        e2e_weight: 1.0       # edge-to-edge: the same on the edge (force) branch (GemNet-OC only)
        gt_weight: 0.0        # the ordinary fairchem loss against the labels (0 = pure distillation)
        max_samples: null     # budget in structures (one epoch of that many); else optim.max_epochs
        sampling: proportional  # across the .lmdb sources of dataset.train.src: proportional | uniform | temperature
        temperature: 2.0
    model:
      name: gemnet_oc_reduced # equiformer_v2_reduced for an EquiformerV2 teacher
      num_blocks_kept: 4      # pretrained_checkpoint defaults to the teacher (sliced initialisation)

The loss is  gt_weight * L_gt + force_weight * L_F + energy_weight * L_E + n2n_weight * L_n2n +
e2e_weight * L_e2e, every L1 a mean over elements across all ranks (fairchem's ``DDPLoss``). Outputs
are compared in the normalised space the teacher was trained in: the student takes the teacher
checkpoint's normalizers and element references. The teacher is frozen, in eval mode, run on the same
batch, device and autocast precision (under ``no_grad`` unless its forces are energy gradients), and
replicated on each rank, never wrapped in DDP. It replays the random draws of the student's pass, so
that EquiformerV2's random edge-frame rolls are the same in both (GemNet-OC draws none). Checkpoints
hold the student only, as an ordinary ``gemnet_oc_reduced`` / ``equiformer_v2_reduced`` checkpoint
with a self-contained config.

EquiformerV2 (monolithic ``equiformer_v2`` / ``equiformer_v2_reduced`` teacher, student
``equiformer_v2_reduced``) has no FinalMLP. Its n2n term is L1(x_s, x_t) between the final node
embeddings, the output of the final norm that both heads read, each (|V|, sum (lmax+1)^2,
sphere_channels): like GemNet-OC's FinalMLP features, the representation at the readout, the same
position in student and teacher whichever blocks are kept (matching each kept block to its source
block would pin the student's last block to the teacher's intermediate features, which its heads were
not trained to read). It has no edge features: ``e2e_weight`` must be 0.
"""

from __future__ import annotations

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

from fairchem_prune.checkpoints import load_source
from fairchem_prune.errors import PruneError
from fairchem_prune.features import capture_distillation_features
from fairchem_prune.models import check_training_data, forces_are_gradients
from fairchem_prune.sampling import SAMPLING_CHOICES, SourceBalancedBatchSampler, source_ids, source_probabilities

WEIGHTS = ("force_weight", "energy_weight", "n2n_weight", "e2e_weight", "gt_weight")


@dataclass
class DistillSettings:
    """The ``task.distill`` section (see the module docstring)."""

    teacher_checkpoint: str
    force_weight: float = 1.0
    energy_weight: float = 0.0
    n2n_weight: float = 1.0
    e2e_weight: float = 1.0
    gt_weight: float = 0.0
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
        return settings


def _mlp_signature(mlp) -> tuple | None:
    """Widths of a FinalMLP that do not depend on the number of blocks (None without one)."""
    if mlp is None:
        return None
    return mlp[0].linear.out_features, [tuple(p.shape) for p in mlp[1:].parameters()]


def _feature_widths(model, architecture: str) -> dict:
    """The widths of the compared features, which do not depend on the number of blocks."""
    if architecture == "equiformer_v2":
        return {"node embedding": (model.sphere_channels, list(model.lmax_list), list(model.mmax_list))}
    return {f"FinalMLPs ({layer})": _mlp_signature(getattr(model, layer, None)) for layer in ("out_mlp_E", "out_mlp_F")}


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
class DistillTrainer(OCPTrainer):
    """fairchem's ``OCPTrainer`` with a frozen teacher and the distillation loss."""

    # === set-up: teacher, student, normalizers, sampler ===
    def load_model(self) -> None:
        self.distill = DistillSettings.from_task(self.config["task"])
        source = load_source(self.distill.teacher_checkpoint)
        self._architecture, self._student_name = source.ARCHITECTURE, source.REDUCED
        if source.is_hydra:
            raise PruneError(f"teacher {source.path} is a hydra model; distillation takes a monolithic {source.ARCHITECTURE} teacher")
        model_config = self.config["model"]
        if model_config.get("name") != source.REDUCED:
            raise PruneError(f"the distill student must be model name {source.REDUCED} for the {source.ARCHITECTURE} "
                             f"teacher {source.path}, got {model_config.get('name')!r}")
        if self.distill.e2e_weight and source.ARCHITECTURE == "equiformer_v2":
            raise PruneError("task.distill.e2e_weight: the edge-to-edge term is not defined for EquiformerV2 "
                             "(it has no edge features); set task.distill.e2e_weight: 0")
        model_config.setdefault("pretrained_checkpoint", self.distill.teacher_checkpoint)
        super().load_model()
        if isinstance(self.model, DistributedDataParallel):
            # layers that no distillation term reaches (e.g. out_energy without energy terms) get no
            # gradient; fairchem's plain DDP wrapper rejects that
            module = self.model.module
            del self.model
            self.model = DistributedDataParallel(module, find_unused_parameters=True)

        student, teacher = self._unwrapped_model, source.model
        student_blocks, teacher_blocks = len(getattr(student, source.BLOCKS)), source.num_blocks
        if student_blocks > teacher_blocks:
            raise PruneError(f"the student keeps {student_blocks} blocks but the teacher has {teacher_blocks}")
        teacher_widths = _feature_widths(teacher, source.ARCHITECTURE)
        for part, widths in _feature_widths(student, source.ARCHITECTURE).items():
            if widths != teacher_widths[part]:
                raise PruneError(f"student and teacher {part} differ; the student must be reduced from the teacher")
        if self.distill.e2e_weight and getattr(student, "out_mlp_F", None) is None:
            raise PruneError("task.distill.e2e_weight > 0 needs direct-force models (an edge FinalMLP, out_mlp_F)")
        self.teacher = teacher.to(self.device).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self._teacher_checkpoint = source.checkpoint
        self._l1 = DDPLoss("mae", "mean")
        logging.info(f"distill: teacher {source.path} ({teacher_blocks} blocks), "
                     f"student keeps {student.kept_blocks} ({sum(p.numel() for p in student.parameters()):,} parameters)")

    def load_references_and_normalizers(self) -> None:
        """The teacher's normalizers and element references when it has them (the outputs are
        compared in its normalised space), else fairchem's own (from the config)."""
        from fairchem.core.modules.normalization.element_references import create_element_references
        from fairchem.core.modules.normalization.normalizer import create_normalizer

        checkpoint = self._teacher_checkpoint
        if not checkpoint.get("normalizers") and not checkpoint.get("elementrefs"):
            return super().load_references_and_normalizers()
        renamed = {"target": "energy", "grad_target": "forces"}
        for key, state in checkpoint.get("normalizers", {}).items():
            self.normalizers[renamed.get(key, key)] = create_normalizer(state_dict=state).to(self.device)
        for key, state in checkpoint.get("elementrefs", {}).items():
            self.elementrefs[key] = create_element_references(state_dict=state).to(self.device)
        return None

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
                     + f"; {len(self.train_sampler)} steps per epoch")

    # === one step: student and teacher on the same batch ===
    def _teacher_forward(self, batch, rng: tuple) -> tuple[dict, tuple[list, list]]:
        """Teacher outputs (energy (B, 1), forces (|V|, 3)) and (node, edge) features, detached,
        from the random state ``rng`` that the student's pass started from."""
        with (torch.set_grad_enabled(forces_are_gradients(self.teacher)), _replayed_rng(rng, self.device),
              capture_distillation_features(self.teacher, self._architecture) as (node, edge)):
            raw = self.teacher(batch)
        sizes = {"energy": batch.natoms.numel(), "forces": int(batch.natoms.sum())}
        outputs = {key: raw[key].detach().view(sizes[key], -1) for key in sizes if key in raw}
        return outputs, ([h.detach() for h in node], [m.detach() for m in edge])

    def _forward(self, batch):
        batch = batch.to(self.device)
        rng = _rng_state(self.device)
        with capture_distillation_features(self._unwrapped_model, self._architecture) as student_features:
            out = super()._forward(batch)
        teacher_out, teacher_features = self._teacher_forward(batch, rng)
        self._step = {"student": student_features, "teacher": teacher_features, "teacher_out": teacher_out}
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
        weights = {"gt": settings.gt_weight, "forces": settings.force_weight, "energy": settings.energy_weight,
                   "n2n": settings.n2n_weight, "e2e": settings.e2e_weight}
        total = sum(weights[name] * value for name, value in terms.items())
        logged = {f"distill_{name}": value for name, value in terms.items()}
        logged["distill_loss"] = total
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

    # === checkpoints: the student only, as an ordinary gemnet_oc_reduced / equiformer_v2_reduced checkpoint ===
    def _ordinary_config(self) -> dict:
        config = copy.deepcopy(self.config)
        config["model"] = {"name": self._student_name, **self._unwrapped_model.resolved_config}
        config["task"].pop("distill", None)
        return config

    def save(self, *args, **kwargs):
        config, self.config = self.config, self._ordinary_config()
        try:
            return super().save(*args, **kwargs)
        finally:
            self.config = config
