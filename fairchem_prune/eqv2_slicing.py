"""EquiformerV2 checkpoints as the source of a block reduction, and their state-dict slicing.

A source is a fairchem 1.x checkpoint of a monolithic ``equiformer_v2`` / ``equiformer_v2_reduced``
model or of a ``hydra`` model whose backbone is ``equiformer_v2_backbone`` /
``equiformer_v2_reduced_backbone``, rebuilt from its own config with its EMA weights when it has them.

Slicing is a renumbering: transformer block k's weights ``blocks.k.`` (monolithic), ``backbone.blocks.k.``
(hydra), with any DDP ``module.`` prefix, become ``blocks.j.`` for the j-th kept block; the other blocks
are dropped. Everything else (embeddings, shared SO(3) buffers, the final norm, the energy and force
heads) is unchanged: the heads read the normalised output of the last block, whose width does not
depend on the number of blocks, so EquiformerV2 has no concatenating FinalMLP to slice.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from fairchem_prune.checkpoints import ModelSource, checkpoint_model_config, load_checkpoint_weights, read_checkpoint
from fairchem_prune.errors import PruneError

MONOLITHIC_MODELS = ("equiformer_v2", "equiformer_v2_reduced")
BACKBONE_MODELS = ("equiformer_v2_backbone", "equiformer_v2_reduced_backbone")
#: hydra head module -> the layers it owns, named as in the monolithic model
HEAD_LAYERS = {
    "equiformer_v2_energy_head": ("energy_block",),
    "equiformerV2_scalar_head": ("energy_block",),
    "equiformer_v2_force_head": ("force_block",),
    "equiformerV2_vector_head": ("force_block",),
}

_BLOCK = re.compile(r"^((?:module\.)*(?:backbone\.)?)blocks\.(\d+)\.")


def is_equiformer_v2_config(model_config: dict) -> bool:
    """Whether a checkpoint's model config is an EquiformerV2 (monolithic or hydra backbone)."""
    if model_config.get("name") == "hydra":
        backbone = model_config.get("backbone")
        return isinstance(backbone, dict) and backbone.get("model") in BACKBONE_MODELS
    return model_config.get("name") in MONOLITHIC_MODELS


def slice_blocks(state_dict: Mapping[str, torch.Tensor], kept: Sequence[int]) -> dict[str, torch.Tensor]:
    """State dict keeping transformer blocks ``kept`` (0-based, increasing), renumbered 0..b'-1."""
    position = {k: j for j, k in enumerate(kept)}
    sliced = {}
    for key, value in state_dict.items():
        match = _BLOCK.match(key)
        if match is None:
            sliced[key] = value
        elif int(match.group(2)) in position:
            sliced[f"{match.group(1)}blocks.{position[int(match.group(2))]}.{key[match.end():]}"] = value
    return sliced


class EquiformerV2Source(ModelSource):
    """An EquiformerV2 source; its energy and force blocks live in the hydra heads."""

    ARCHITECTURE = "equiformer_v2"
    REDUCED = "equiformer_v2_reduced"
    BLOCKS = "blocks"
    BLOCK_KEY = "num_layers"
    HEAD_LAYERS = HEAD_LAYERS


def _build(model_config: dict, path: Path) -> nn.Module:
    from fairchem.core.common.registry import registry
    import fairchem.core.models.base  # noqa: F401  (hydra)
    import fairchem.core.models.equiformer_v2.equiformer_v2  # noqa: F401  (backbone and heads)
    import fairchem.core.models.equiformer_v2.equiformer_v2_deprecated  # noqa: F401  (equiformer_v2)

    config = copy.deepcopy(model_config)
    name = config.pop("name")
    if not is_equiformer_v2_config(model_config):
        raise PruneError(
            f"checkpoint {path} holds a {name!r} model; expected an EquiformerV2 checkpoint "
            f"({', '.join(MONOLITHIC_MODELS)}, or hydra with a {' / '.join(BACKBONE_MODELS)} backbone)"
        )
    if name == "hydra":
        if not config.get("heads"):
            raise PruneError(f"checkpoint {path} holds a hydra model without heads; give one with explicit heads")
        config.pop("finetune_config", None)  # the weights come from this checkpoint
    return registry.get_model_class(name)(**config)


def load_equiformer_v2_source(path: str | Path, checkpoint: dict | None = None) -> EquiformerV2Source:
    """Rebuild the EquiformerV2 model of checkpoint ``path`` (already read: ``checkpoint``) and load its
    weights, EMA if present."""
    path = Path(path)
    checkpoint = read_checkpoint(path) if checkpoint is None else checkpoint
    model_config = checkpoint_model_config(checkpoint, path)
    model = _build(model_config, path)
    used_ema = load_checkpoint_weights(model, checkpoint, path)
    return EquiformerV2Source(
        path=path, checkpoint=checkpoint, model_config=model_config, model=model.eval(), used_ema=used_ema
    )
