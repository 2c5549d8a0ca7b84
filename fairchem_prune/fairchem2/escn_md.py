"""The eSCN-MD backbones of fairchem 2: what this package needs to know about their blocks.

UMA's ``eSCNMDMoeBackbone`` and the 2.x eSEN models' ``eSCNMDBackbone`` (the same backbone without
experts) hold ``num_layers`` blocks in ``backbone.blocks`` (``eSCNMD_Block``: edge-wise SO(2)
convolutions and an atom-wise feed-forward, each with its norm). Everything else is shared by every
block or independent of their number: the embeddings, the MoLE routing (one set of expert coefficients
per system, used by every block), the final norm and the heads, which read the final node embedding
``(N_atoms, (lmax+1)^2, sphere_channels)``. The only settings that depend on the number of blocks are
``num_layers`` and, where a config lists it, ``layers_moe`` (the blocks with MoLE layers; None: all).

State-dict keys: ``backbone.blocks.<i>.<...>`` in ``model_state_dict`` and ``module.backbone.blocks.<i>.<...>``
in an ``AveragedModel``'s ``ema_state_dict``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

from torch import nn

from fairchem_prune.errors import PruneError

LABEL = "eSCN-MD (UMA / eSEN)"
BLOCK_KIND = "eSCN-MD"
#: a block's entry in either state dict: (prefix, block index, rest)
BLOCK_KEY = re.compile(r"^((?:module\.)?backbone\.blocks\.)(\d+)(\..*)$")


def backbone_config(model_config: Mapping, where: str) -> dict:
    """The ``backbone`` section of a ``HydraModel`` config, checked to be an eSCN-MD backbone."""
    from fairchem.core.common.registry import registry
    from fairchem.core.models.uma.escn_md import eSCNMDBackbone

    backbone = model_config.get("backbone") if isinstance(model_config, Mapping) else None
    name = backbone.get("model") if isinstance(backbone, Mapping) else None
    try:
        cls = registry.get_model_class(name) if name else None
    except Exception:  # an unknown dotted path or name
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, eSCNMDBackbone)):
        raise PruneError(f"{where} holds a model with a {name!r} backbone; on fairchem 2, fairchem-prune reduces "
                         f"the eSCN-MD backbones (UMA: eSCNMDMoeBackbone, eSEN: eSCNMDBackbone)")
    return backbone


def num_blocks(model_config: Mapping, where: str) -> int:
    return int(backbone_config(model_config, where).get("num_layers", 2))


def reduced_config(model_config: Mapping, kept: Sequence[int]) -> dict:
    """A copy of ``model_config`` with the blocks ``kept`` (0-based, increasing): ``num_layers`` and a
    listed ``layers_moe`` renumbered; nothing else changes."""
    config = copy.deepcopy(dict(model_config))
    backbone = config["backbone"]
    backbone["num_layers"] = len(kept)
    if backbone.get("layers_moe") is not None:
        position = {k: j for j, k in enumerate(kept)}
        backbone["layers_moe"] = [position[k] for k in backbone["layers_moe"] if k in position]
    return config


def slice_state_dict(state_dict: Mapping, kept: Sequence[int]) -> dict:
    """Either state dict keeping the blocks ``kept``, renumbered 0..b'-1; other entries unchanged."""
    position = {k: j for j, k in enumerate(kept)}
    sliced = {}
    for key, value in state_dict.items():
        match = BLOCK_KEY.match(key)
        if match is None:
            sliced[key] = value
        elif int(match.group(2)) in position:
            sliced[f"{match.group(1)}{position[int(match.group(2))]}{match.group(3)}"] = value
    return sliced


def backbone_of(model: nn.Module) -> nn.Module:
    """The backbone of a ``HydraModel`` (inside an ``AveragedModel`` or not)."""
    return getattr(model, "module", model).backbone


def blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of a built model, in order."""
    return list(backbone_of(model).blocks)
