"""``equiformer_v2_reduced``: fairchem's EquiformerV2 keeping a subset of its transformer blocks.

The reduced model *is* a stock EquiformerV2 (the deprecated monolithic ``equiformer_v2`` that
fairchem 1.10 still registers, or the hydra ``equiformer_v2_backbone``) with b' = len(kept) layers:
the forward pass is fairchem's, unchanged. What this module adds is how it is built, from a source
with b blocks, optionally from a pre-trained checkpoint whose kept blocks are copied over (see
:mod:`fairchem_prune.architectures.equiformer_v2`). The final norm and the energy / force heads are copied
unchanged: they read the last block's output, of the same width whatever b', so unlike GemNet-OC
there is no concatenating FinalMLP and nothing needs slicing.
"""

from __future__ import annotations

from fairchem.core.common.registry import registry
from fairchem.core.models.equiformer_v2.equiformer_v2 import EquiformerV2Backbone
from fairchem.core.models.equiformer_v2.equiformer_v2_deprecated import EquiformerV2

from fairchem_prune.architectures.equiformer_v2 import ADAPTER
from fairchem_prune.models.reduction import BlockReduction


@registry.register_model("equiformer_v2_reduced")
class EquiformerV2Reduced(BlockReduction, EquiformerV2):
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
            ``force_block``). Shape hyperparameters (the adapter's ``shape_keys``) come from it and may not be
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

    architecture = ADAPTER
    _stock = EquiformerV2


@registry.register_model("equiformer_v2_reduced_backbone")
class EquiformerV2ReducedBackbone(BlockReduction, EquiformerV2Backbone):
    """Hydra backbone variant of :class:`EquiformerV2Reduced` (same arguments, plus the backbone's
    ``activation_checkpoint``).

    Pairs with fairchem's ``equiformer_v2_energy_head`` / ``equiformer_v2_force_head``. The backbone's
    ``pretrained_checkpoint`` loads the backbone weights; fairchem's ``hydra`` model builds the heads
    fresh. To start with the pre-trained heads, slice the checkpoint with ``tools/slice_checkpoint.py``
    and use fairchem's ``finetune_config: {starting_checkpoint: SLICED}``.
    """

    architecture = ADAPTER
    _stock = EquiformerV2Backbone
