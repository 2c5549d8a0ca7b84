"""``trainer: finetune``: fairchem's ``OCPTrainer`` plus two parts of JMP's fine-tuning recipe that
fairchem 1.10 lacks, both read from the ``optim`` section (and a stop on a validation plateau,
``optim.plateau``, :mod:`~fairchem_prune.trainers.plateau`):

* layer-wise learning rates (``layerwise_lr: {embedding: m_e, blocks: [m_0, m_1, ...]}``): the
  embedding trains at ``m_e * lr_initial``, block i at ``m_i * lr_initial``, the layers every block
  shares (bases, readout, heads) at ``lr_initial``. Which parameter is which is the architecture's
  (its adapter's ``parameter_block``; e.g. an output block that reads block i belongs to block i); a
  parameter it does not place is an error. A reduced model with k blocks uses ``m_0 .. m_{k-1}``.
* ``scheduler: WarmupCosine``: linear warm-up from ``warmup_factor * lr`` over ``warmup_epochs``,
  cosine decay to ``lr_min_factor * lr`` at ``cosine_epochs``, constant after (fairchem's
  ``CosineLRLambda``, epochs converted to steps). It scales every parameter group's own rate.
"""

from __future__ import annotations

import torch
from fairchem.core.common.registry import registry
from fairchem.core.modules.scheduler import CosineLRLambda, LRScheduler
from fairchem.core.trainers.ocp_trainer import OCPTrainer

from fairchem_prune import architectures
from fairchem_prune.errors import PruneError
from fairchem_prune.models import check_training_data
from fairchem_prune.trainers.data_paths import ChecksDataPaths
from fairchem_prune.trainers.plateau import StopsOnPlateau
from fairchem_prune.trainers.preemption import ResumesAtCompletedStep

WARMUP_COSINE = "WarmupCosine"


def lr_scale(block: int | None, embedding: float, blocks: list[float], name: str) -> float:
    """Learning-rate multiplier of a parameter (``name``, for messages) of ``block`` (the
    architecture's :meth:`~fairchem_prune.architectures.base.Architecture.parameter_block`)."""
    if block is None:
        return 1.0
    if block < 0:
        return embedding
    if block >= len(blocks):
        raise PruneError(f"optim.layerwise_lr.blocks has {len(blocks)} entries but the model has block {block} "
                         f"({name}); give one multiplier per block")
    return blocks[block]


def layerwise_param_groups(model: torch.nn.Module, lr: float, weight_decay: float, layerwise_lr: dict,
                           no_weight_decay: tuple[str, ...] = ()) -> list[dict]:
    """Optimizer parameter groups, one per (multiplier, decay): ``lr`` = multiplier x ``lr``,
    ``weight_decay`` 0 for parameters whose name ends with one of ``no_weight_decay``. Each group
    also records its ``lr_scale``. Every trainable parameter must belong to a block, the embedding
    or the shared layers of the model's architecture (PruneError otherwise)."""
    architecture = architectures.of_model(model)
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            block = architecture.parameter_block(name)
            scale = lr_scale(block, layerwise_lr["embedding"], list(layerwise_lr["blocks"]), name)
            decay = not any(name.endswith(skip) for skip in no_weight_decay)
            groups.setdefault((scale, decay), []).append(param)
    return [{"params": params, "lr": lr * scale, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0}
            for (scale, decay), params in sorted(groups.items())]


def extend_multipliers(layerwise_lr: dict, num_blocks: int) -> dict:
    """``layerwise_lr`` with a multiplier for each of ``num_blocks`` blocks: the last one repeated where
    the recipe lists fewer (JMP-L's recipe has 6)."""
    blocks = list(layerwise_lr["blocks"])
    return {**layerwise_lr, "blocks": blocks + blocks[-1:] * max(0, num_blocks - len(blocks))}


def warmup_cosine(optimizer: torch.optim.Optimizer, optim: dict, steps_per_epoch: int) -> LRScheduler:
    """fairchem ``LRScheduler`` (``LambdaLR``) with fairchem's ``CosineLRLambda`` in steps."""
    schedule = CosineLRLambda(
        # at least one warm-up step: fairchem's lambda divides by their number
        warmup_epochs=max(1, int(optim["warmup_epochs"] * steps_per_epoch)), warmup_factor=optim["warmup_factor"],
        epochs=int(optim["cosine_epochs"] * steps_per_epoch), lr_min_factor=optim["lr_min_factor"],
    )
    return LRScheduler(optimizer, {"scheduler": "LambdaLR", "lr_lambda": schedule})


@registry.register_trainer("finetune")
class FinetuneTrainer(ChecksDataPaths, StopsOnPlateau, ResumesAtCompletedStep, OCPTrainer):
    """``OCPTrainer`` with layer-wise learning rates, the ``WarmupCosine`` schedule (see module) and a stop
    on a validation plateau (``optim.plateau``, :mod:`~fairchem_prune.trainers.plateau`)."""

    def load_datasets(self) -> None:
        super().load_datasets()
        check_training_data(self._unwrapped_model, self.train_dataset)

    def load_optimizer(self) -> None:
        optim = self.config["optim"]
        if "layerwise_lr" not in optim:
            return super().load_optimizer()
        params = dict(optim.get("optimizer_params", {}))
        model = self._unwrapped_model
        no_wd = tuple(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else ()
        groups = layerwise_param_groups(model, optim["lr_initial"], params.pop("weight_decay", 0.0),
                                        optim["layerwise_lr"], no_wd)
        self.optimizer = getattr(torch.optim, optim.get("optimizer", "AdamW"))(groups, lr=optim["lr_initial"], **params)
        return None

    def load_extras(self) -> None:
        optim = self.config["optim"]
        if optim.get("scheduler") != WARMUP_COSINE:
            return super().load_extras()
        self.config["optim"] = {**optim, "scheduler": "Null"}
        try:
            super().load_extras()
        finally:
            self.config["optim"] = optim
        loader = getattr(self, "train_loader", None)
        self.scheduler = warmup_cosine(self.optimizer, optim, len(loader) if loader is not None else 1)
        return None
