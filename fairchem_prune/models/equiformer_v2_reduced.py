"""``equiformer_v2_reduced``: fairchem's EquiformerV2 keeping a subset of its transformer blocks.

The reduced model *is* a stock EquiformerV2 (the deprecated monolithic ``equiformer_v2`` that
fairchem 1.10 still registers, or the hydra ``equiformer_v2_backbone``) with b' = len(kept) layers:
the forward pass is fairchem's, unchanged. What this module adds is how it is built, from a source
with b blocks, optionally from a pre-trained checkpoint whose kept blocks are copied over (see
:mod:`fairchem_prune.eqv2_slicing`). The final norm and the energy / force heads are copied
unchanged: they read the last block's output, of the same width whatever b', so unlike GemNet-OC
there is no concatenating FinalMLP and nothing needs slicing.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
from fairchem.core.common.registry import registry
from fairchem.core.models.equiformer_v2.equiformer_v2 import EquiformerV2Backbone
from fairchem.core.models.equiformer_v2.equiformer_v2_deprecated import EquiformerV2
from torch import nn

from fairchem_prune.blocks import kept_with_origin
from fairchem_prune.eqv2_slicing import load_equiformer_v2_source, slice_blocks
from fairchem_prune.checkpoints import reject_contradictions
from fairchem_prune.errors import PruneError

#: hyperparameters that fix the shapes of the weights or what they compute: a config may not
#: contradict the checkpoint's
ARCHITECTURE_KEYS = (
    "max_num_elements", "sphere_channels", "attn_hidden_channels", "num_heads", "attn_alpha_channels",
    "attn_value_channels", "ffn_hidden_channels", "norm_type", "lmax_list", "mmax_list", "grid_resolution",
    "edge_channels", "use_atom_edge_embedding", "share_atom_edge_embedding", "use_m_share_rad",
    "distance_function", "attn_activation", "use_s2_act_attn", "use_attn_renorm", "ffn_activation",
    "use_gate_act", "use_grid_mlp", "use_sep_s2_act", "load_energy_lin_ref",
)
_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(EquiformerV2Backbone.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}
_DEFAULTS.update(lmax_list=[6], mmax_list=[2])  # EquiformerV2 replaces these None defaults in its body


class _BlockReduction:
    """Construction of a reduced EquiformerV2; mixed in before the stock class (``_stock``)."""

    _stock: type[nn.Module]

    def __init__(
        self,
        num_layers: int | None = None,
        num_blocks_kept: int | None = None,
        kept_blocks: list[int] | None = None,
        pretrained_checkpoint: str | None = None,
        source_blocks: list[int] | None = None,
        **kwargs,
    ) -> None:
        name = type(self).__name__
        source = None
        if pretrained_checkpoint is not None:
            source = load_equiformer_v2_source(pretrained_checkpoint)
            if num_layers is not None and num_layers != source.num_blocks:
                raise PruneError(
                    f"model config sets num_layers={num_layers} but pretrained_checkpoint {pretrained_checkpoint} "
                    f"has {source.num_blocks} transformer blocks; remove num_layers and choose the blocks with "
                    "num_blocks_kept or kept_blocks"
                )
            source_config = source.core_config()
            reject_contradictions(ARCHITECTURE_KEYS, _DEFAULTS, source_config, kwargs, pretrained_checkpoint)
            accepted = inspect.signature(self._stock.__init__).parameters
            # a hydra backbone's config may hold arguments the monolithic class lacks, and vice versa
            source_config = {k: v for k, v in source_config.items() if k in accepted and k != "num_layers"}
            kwargs = {**source_config, **kwargs}
            num_layers, source_blocks = source.num_blocks, source.source_blocks
        elif num_layers is None:
            raise PruneError(f"{name} needs num_layers (source blocks) or a pretrained_checkpoint")

        kept, origin = kept_with_origin(num_layers, num_blocks_kept, kept_blocks, source_blocks)
        super().__init__(num_layers=len(kept), **kwargs)
        self.kept_blocks, self.source_blocks = kept, origin
        self.resolved_config = {**copy.deepcopy(kwargs), "num_layers": len(kept), "source_blocks": self.source_blocks}
        if source is not None:
            weights = slice_blocks(source.monolithic_state_dict(), kept)
            own = self.state_dict()
            # drop what this model does not have (the heads for a backbone, force_block without forces)
            result = self.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
            if result.missing_keys:
                logging.info(f"{name}: not in {source.path}, freshly initialised: {result.missing_keys}")
            logging.info(
                f"{name}: kept blocks {kept} of {source.num_blocks} from {source.path} "
                f"({'EMA' if source.used_ema else 'raw'} weights)"
            )


@registry.register_model("equiformer_v2_reduced")
class EquiformerV2Reduced(_BlockReduction, EquiformerV2):
    """EquiformerV2 (fairchem's monolithic ``equiformer_v2``) keeping a chosen, ordered subset of the
    transformer blocks of a source model.

    Args:
        num_layers: transformer blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices.
        pretrained_checkpoint: fairchem checkpoint (``equiformer_v2``, ``equiformer_v2_reduced`` or a hydra
            model with an EquiformerV2 backbone) to take the architecture and weights from (EMA weights
            when it has them); the final norm and the heads are copied unchanged (a hydra checkpoint's
            ``equiformer_v2_energy_head`` / ``equiformer_v2_force_head`` become ``energy_block`` /
            ``force_block``). Shape hyperparameters (``ARCHITECTURE_KEYS``) come from it and may not be
            contradicted; the others (``max_radius``, ``max_neighbors``, ``regress_forces``, ``use_pbc``,
            dropout rates, ...) may be changed.
        source_blocks: provenance only: indices of the source blocks in the original unreduced model
            (written by the slicing tool; default ``range(b)``).
        **kwargs: any other ``equiformer_v2`` argument.

    Attributes:
        kept_blocks: the kept source block indices. source_blocks: their indices in the original
            model. resolved_config: self-contained kwargs (no checkpoint path) that rebuild this
            architecture with ``num_layers=b'``.
    """

    _stock = EquiformerV2


@registry.register_model("equiformer_v2_reduced_backbone")
class EquiformerV2ReducedBackbone(_BlockReduction, EquiformerV2Backbone):
    """Hydra backbone variant of :class:`EquiformerV2Reduced` (same arguments, plus the backbone's
    ``activation_checkpoint``).

    Pairs with fairchem's ``equiformer_v2_energy_head`` / ``equiformer_v2_force_head``. The backbone's
    ``pretrained_checkpoint`` loads the backbone weights; fairchem's ``hydra`` model builds the heads
    fresh. To start with the pre-trained heads, slice the checkpoint with ``tools/slice_checkpoint.py``
    and use fairchem's ``finetune_config: {starting_checkpoint: SLICED}``.
    """

    _stock = EquiformerV2Backbone


def is_equiformer_v2(model: nn.Module) -> bool:
    """Whether ``model`` is an EquiformerV2 model (reduced or not) or a hydra model with such a backbone."""
    return isinstance(getattr(model, "backbone", model), (EquiformerV2, EquiformerV2Backbone))


def transformer_blocks(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of an EquiformerV2 model or of a hydra model with such a backbone."""
    if not is_equiformer_v2(model):
        raise ValueError(f"{type(model).__name__} is not an EquiformerV2 model (no transformer blocks)")
    return getattr(model, "backbone", model).blocks


@contextmanager
def capture_block_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the output of every transformer block in each forward pass of ``model`` (an EquiformerV2
    model, reduced or not, or a hydra model with such a backbone).

    Yields a list that, after a forward pass, holds b' tensors (block order, the i-th from the block of
    original index ``model.source_blocks[i]``), each the block's output node embedding of shape
    (|V|, sum over resolutions of (lmax+1)^2, sphere_channels): spherical-harmonic coefficients, the
    l = 0 column (``[:, 0, :]``) invariant, the others equivariant. The last entry is before the final
    norm. The tensors are in the autograd graph; each pass replaces the previous one's. Hooks only: the
    forward pass is unchanged, and nothing is recorded outside the context.
    """
    blocks = transformer_blocks(model)
    outputs: list[torch.Tensor] = []

    def reset(_module, _args):
        outputs[:] = [None] * len(blocks)

    def record(_module, _args, output, index):
        outputs[index] = output.embedding  # by index: activation checkpointing may re-run a block

    handles = [getattr(model, "backbone", model).register_forward_pre_hook(reset)]
    handles += [block.register_forward_hook(partial(record, index=i)) for i, block in enumerate(blocks)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_node_embedding(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the final node embedding in each forward pass of ``model`` (as for
    :func:`capture_block_outputs`): the output of the final norm, which both heads read.

    Yields a list that, after a forward pass, holds one tensor of shape
    (|V|, sum over resolutions of (lmax+1)^2, sphere_channels), in the autograd graph.
    """
    transformer_blocks(model)  # ValueError for other models
    owner = getattr(model, "backbone", model)
    embedding: list[torch.Tensor] = []

    def record(_module, _args, output):
        embedding[:] = [output]

    handle = owner.norm.register_forward_hook(record)
    try:
        yield embedding
    finally:
        handle.remove()
