"""Slicing a checkpoint to a subset of its blocks: an ordinary fairchem checkpoint of the reduced model.

How the weights are sliced is the architecture's (:meth:`Architecture.slice_state_dict
<fairchem_prune.architectures.base.Architecture.slice_state_dict>`): block k's entries become block
j's for the j-th kept block, other blocks are dropped, and entries whose shape depends on the blocks
(a readout that concatenates every block's features) are sliced or left to a fresh initialisation (``mlp_init``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from fairchem_prune.blocks import SliceReport, resolve_kept_blocks
from fairchem_prune.errors import PruneError
from fairchem_prune.params import count_parameters


def build_reduced(source, kept: Sequence[int], weights: Mapping[str, torch.Tensor],
                  fresh: Callable[[str], bool] = lambda key: False) -> tuple[torch.nn.Module, dict]:
    """The reduced counterpart of ``source`` (a :class:`~fairchem_prune.checkpoints.ModelSource`)
    keeping ``kept``, loaded with the sliced ``weights``, and the self-contained model config that
    rebuilds it. A hydra source gives a hydra model with the reduced backbone and the same heads.
    Parameters for which ``fresh(key)`` holds keep the model's own initialisation."""
    from fairchem.core.common.registry import registry

    architecture = source.architecture
    template = {k: v for k, v in source.model_config.items() if k != "finetune_config"}  # weights come from here

    def model_config(core: dict) -> dict:
        return architecture.with_core(template, core)

    core = source.core_config()
    core.update({architecture.block_key: source.num_blocks, "kept_blocks": list(kept), "source_blocks": source.source_blocks})
    core.pop("num_blocks_kept", None)
    build = model_config(core)
    model = registry.get_model_class(build.pop("name"))(**build)
    result = model.load_state_dict(weights, strict=False)
    unexplained = [k for k in result.missing_keys if not fresh(k)]
    if unexplained or result.unexpected_keys:
        raise PruneError(
            f"slicing {source.path} left weights unmatched (missing {unexplained[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}); please report this with the checkpoint's config"
        )
    return model.eval(), model_config((model.backbone if source.is_hydra else model).resolved_config)


#: checkpoint entries that belong to a training run, not to the sliced model
_TRAINING_STATE = ("optimizer", "scheduler", "ema", "epoch", "step", "best_val_metric", "primary_metric",
                   "val_metrics", "scale_dict")


def slice_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    num_blocks_kept: int | None = None,
    kept_blocks: Sequence[int] | None = None,
    mlp_init: str = "sliced",
    force: bool = False,
    seed: int = 0,
) -> SliceReport:
    """Write to ``output`` an ordinary fairchem checkpoint of the reduced model.

    It loads with ``fairchem --mode predict --checkpoint OUT``, ``OCPCalculator(checkpoint_path=OUT)``
    and as a ``pretrained_checkpoint``; its config is self-contained (no reference to ``checkpoint``),
    EMA weights are baked into its state dict, unfitted scale factors are stored as the identity they
    are (1.0: :func:`~fairchem_prune.checkpoints.fit_identity_scale_factors`) and the training state
    (optimizer, step) is dropped.
    ``seed`` seeds the fresh initialisation used by ``mlp_init="random"``. ``checkpoint`` may be of
    any architecture of :mod:`fairchem_prune.architectures` (monolithic or hydra).
    """
    from fairchem_prune.checkpoints import check_output, fit_identity_scale_factors, load_source, save_checkpoint

    source_path, output = Path(checkpoint), Path(output)
    check_output(source_path, output, force, "sliced model")
    source = load_source(source_path)
    architecture = source.architecture
    architecture.check_mlp_init(mlp_init)
    kept = resolve_kept_blocks(source.num_blocks, num_blocks_kept, kept_blocks, architecture.block_kind)
    torch.manual_seed(seed)
    weights = architecture.slice_state_dict(source.state_dict(), source.num_blocks, kept, mlp_init)
    model, model_config = build_reduced(source, kept, weights, fresh=lambda key: architecture.is_fresh(key, mlp_init))
    fit_identity_scale_factors(model)
    if len(architecture.mlp_init_choices) == 1:
        mlp_init = None

    new = {k: v for k, v in source.checkpoint.items() if k not in _TRAINING_STATE}
    new["config"] = {**copy.deepcopy(source.checkpoint["config"]), "model": model_config}
    new["config"].pop("model_attributes", None)
    new["state_dict"] = model.state_dict()
    new.setdefault("normalizers", {})
    new.setdefault("elementrefs", {})
    new["amp"] = None
    new["fairchem_prune"] = {
        "source_checkpoint": str(source_path),
        "kept_blocks": kept,
        "source_blocks": model_config.get("source_blocks") or model_config["backbone"]["source_blocks"],
        "mlp_init": mlp_init,
        "used_ema": source.used_ema,
    }
    save_checkpoint(new, output)
    return SliceReport(
        source=source_path,
        output=output,
        kept_blocks=kept,
        source_blocks=new["fairchem_prune"]["source_blocks"],
        num_source_blocks=source.num_blocks,
        params_before=count_parameters(source.model),
        params_after=count_parameters(model),
        weights="EMA" if source.used_ema else "state_dict",
        mlp_init=mlp_init,
        block_kind=architecture.block_kind,
    )

