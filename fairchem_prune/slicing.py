"""Slice GemNet-OC weights down to a subset of interaction blocks.

Works on state dicts in any key space (monolithic ``int_blocks.3...``, hydra
``backbone.int_blocks.3...`` / ``output_heads.energy.out_mlp_E.0...``, DDP ``module.`` prefixes):

* ``int_blocks.k``        -> ``int_blocks.j``      for the j-th kept block k; other blocks dropped,
* ``out_blocks.0``        -> kept (embedding output block),
* ``out_blocks.(k+1)``    -> ``out_blocks.(j+1)``,
* ``out_mlp_{E,F}.0.linear.weight`` (d_out, d * (b+1)) -> (d_out, d * (b'+1)): the column
  partitions of the embedding and of the kept blocks (*Sliced MLP*), or left out for the model's
  own fresh initialisation (*Random MLP*),
* everything else (embeddings, shared bases, later FinalMLP layers, output layers) unchanged.

Per-block scale factors (``...scale_factor``) live inside their blocks and move with them.

:func:`slice_checkpoint` also takes EquiformerV2 checkpoints (see :mod:`fairchem_prune.eqv2_slicing`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from fairchem_prune.blocks import kept_partitions, resolve_kept_blocks
from fairchem_prune.errors import PruneError
from fairchem_prune.params import count_parameters

MLP_INIT_CHOICES = ("sliced", "random")

_INT_BLOCK = re.compile(r"(^|\.)int_blocks\.(\d+)\.")
_OUT_BLOCK = re.compile(r"(^|\.)out_blocks\.(\d+)\.")
_FIRST_MLP = re.compile(r"(^|\.)out_mlp_[EF]\.0\.linear\.weight$")


def is_first_mlp_weight(key: str) -> bool:
    """Whether ``key`` is the weight of the first FinalMLP layer g_1 (energy or force branch)."""
    return bool(_FIRST_MLP.search(key))


def _renumber(key: str, pattern: re.Pattern, new_index: int) -> str:
    match = pattern.search(key)
    start, end = match.span(2)
    return key[:start] + str(new_index) + key[end:]


def slice_first_mlp_weight(weight: torch.Tensor, num_source_blocks: int, kept: Sequence[int]) -> torch.Tensor:
    """Keep the input columns of the embedding and kept-block partitions of g_1.

    Shapes: weight (d_out, d * (b + 1)) -> (d_out, d * (len(kept) + 1)).
    """
    num_partitions = num_source_blocks + 1
    if weight.shape[1] % num_partitions:
        raise PruneError(
            f"first FinalMLP layer has {weight.shape[1]} inputs, not a multiple of {num_partitions} "
            f"partitions ({num_source_blocks} blocks + embedding): the weights do not match the config"
        )
    width = weight.shape[1] // num_partitions
    parts = weight.split(width, dim=1)
    return torch.cat([parts[p] for p in kept_partitions(kept)], dim=1).clone()


def slice_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    num_source_blocks: int,
    kept: Sequence[int],
    mlp_init: str = "sliced",
) -> dict[str, torch.Tensor]:
    """State dict of the model keeping interaction blocks ``kept`` (0-based, increasing).

    With ``mlp_init="random"`` the g_1 weights are omitted: load the result with ``strict=False``
    into a freshly built reduced model so that those layers keep their fresh initialisation.
    """
    if mlp_init not in MLP_INIT_CHOICES:
        raise PruneError(f"mlp_init must be one of {MLP_INIT_CHOICES}, got {mlp_init!r}")
    position = {k: j for j, k in enumerate(kept)}
    sliced: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if _INT_BLOCK.search(key):
            k = int(_INT_BLOCK.search(key).group(2))
            if k in position:
                sliced[_renumber(key, _INT_BLOCK, position[k])] = value
        elif _OUT_BLOCK.search(key):
            i = int(_OUT_BLOCK.search(key).group(2))
            if i == 0:
                sliced[key] = value
            elif i - 1 in position:
                sliced[_renumber(key, _OUT_BLOCK, position[i - 1] + 1)] = value
        elif is_first_mlp_weight(key):
            if mlp_init == "sliced":
                sliced[key] = slice_first_mlp_weight(value, num_source_blocks, kept)
        else:
            sliced[key] = value
    return sliced


@dataclass
class SliceReport:
    """What :func:`slice_checkpoint` did."""

    source: Path
    output: Path
    kept_blocks: list[int]
    source_blocks: list[int]
    num_source_blocks: int
    params_before: int
    params_after: int
    used_ema: bool
    mlp_init: str | None  # None: the model has no FinalMLP (EquiformerV2)
    block_kind: str = "interaction"

    def summary(self) -> str:
        change = 100.0 * (self.params_after - self.params_before) / self.params_before
        return "\n".join(
            [
                f"source      {self.source}  ({self.num_source_blocks} {self.block_kind} blocks, "
                f"{'EMA' if self.used_ema else 'state_dict'} weights)",
                f"kept blocks {self.kept_blocks}  (original model's blocks {self.source_blocks})"
                + (f", first FinalMLP layer: {self.mlp_init}" if self.mlp_init else ""),
                f"parameters  {self.params_before:,} -> {self.params_after:,}  ({change:+.1f}%)",
                f"written     {self.output}",
            ]
        )


def build_reduced(source, kept: Sequence[int], weights: Mapping[str, torch.Tensor],
                  fresh: Callable[[str], bool] = lambda key: False) -> tuple[torch.nn.Module, dict]:
    """The reduced counterpart of ``source`` (a :class:`~fairchem_prune.checkpoints.ModelSource`)
    keeping ``kept``, loaded with the sliced ``weights``, and the self-contained model config that
    rebuilds it. A hydra source gives a hydra model with the reduced backbone and the same heads.
    Parameters for which ``fresh(key)`` holds keep the model's own initialisation."""
    from fairchem.core.common.registry import registry

    def model_config(core: dict) -> dict:
        if not source.is_hydra:
            return {"name": source.REDUCED, **core}
        config = copy.deepcopy(source.model_config)
        config.pop("finetune_config", None)
        config["backbone"] = {"model": f"{source.REDUCED}_backbone", **core}
        return config

    core = source.core_config()
    core.update({source.BLOCK_KEY: source.num_blocks, "kept_blocks": list(kept), "source_blocks": source.source_blocks})
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
    EMA weights are baked into its state dict and the training state (optimizer, step) is dropped.
    ``seed`` seeds the fresh initialisation used by ``mlp_init="random"``. ``checkpoint`` may be a
    GemNet-OC or an EquiformerV2 checkpoint (monolithic or hydra).
    """
    from fairchem_prune.checkpoints import check_output, load_source, save_checkpoint

    source_path, output = Path(checkpoint), Path(output)
    if mlp_init not in MLP_INIT_CHOICES:
        raise PruneError(f"mlp_init must be one of {MLP_INIT_CHOICES}, got {mlp_init!r}")
    check_output(source_path, output, force, "sliced model")

    source = load_source(source_path)
    if source.ARCHITECTURE == "equiformer_v2" and mlp_init != "sliced":
        raise PruneError(f"mlp_init={mlp_init!r} applies to GemNet-OC's FinalMLP; EquiformerV2 has none, leave it out")
    kept = resolve_kept_blocks(source.num_blocks, num_blocks_kept, kept_blocks)
    block_kind = "interaction"
    if source.ARCHITECTURE == "equiformer_v2":
        from fairchem_prune.eqv2_slicing import slice_blocks

        model, model_config = build_reduced(source, kept, slice_blocks(source.state_dict(), kept))
        mlp_init, block_kind = None, "transformer"
    else:
        torch.manual_seed(seed)
        weights = slice_state_dict(source.state_dict(), source.num_blocks, kept, mlp_init)
        model, model_config = build_reduced(source, kept, weights,
                                            fresh=lambda key: mlp_init == "random" and is_first_mlp_weight(key))

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
        used_ema=source.used_ema,
        mlp_init=mlp_init,
        block_kind=block_kind,
    )

