"""``painn_reduced``: fairchem's PaiNN keeping a subset of its message-passing blocks.

The reduced model *is* a stock PaiNN (monolithic ``painn`` or the hydra ``painn_backbone``) with
b' = len(kept) layers: the forward pass is fairchem's, unchanged. What this module adds is how it is
built, from a source with b blocks, optionally from a pre-trained checkpoint whose kept blocks are
copied over (see :mod:`fairchem_prune.architectures.painn`). The atom embedding, radial basis and
the energy / force readouts are copied unchanged: they do not depend on b'.

Scale factors: block i ends with the fitted ScaleFactor ``upd_out_scalar_scale_i``. From a
checkpoint, the kept blocks' factors come from its state dict (renumbered with their blocks; a
``scale_file`` is ignored). Built from scratch, the model is a stock b'-layer PaiNN: a ``scale_file``
fills ``upd_out_scalar_scale_0 .. b'-1`` as it would for ``painn`` with ``num_layers=b'``.
"""

from __future__ import annotations

from fairchem.core.common.registry import registry
from fairchem.core.models.painn.painn import PaiNN, PaiNNBackbone

from fairchem_prune.architectures.painn import ADAPTER
from fairchem_prune.models.reduction import BlockReduction


@registry.register_model("painn_reduced")
class PaiNNReduced(BlockReduction, PaiNN):
    """PaiNN (fairchem's monolithic ``painn``) keeping a chosen, ordered subset of the message-passing
    blocks of a source model.

    Args:
        num_layers: message-passing blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices.
        pretrained_checkpoint: fairchem checkpoint (``painn``, ``painn_reduced`` or a hydra model with
            a PaiNN backbone) to take the architecture and weights from (EMA weights when it has them);
            the kept blocks' scale factors come with them. The embedding, radial basis and readouts are
            copied unchanged (a hydra checkpoint's ``painn_energy_head`` / ``painn_force_head`` become
            ``out_energy`` / ``out_forces``). Shape hyperparameters (the adapter's ``shape_keys``:
            ``hidden_channels``, ``num_rbf``, ``rbf``, ``envelope``, ``num_elements``) come from it and may
            not be contradicted; the others (``cutoff``, ``max_neighbors``, ``regress_forces``,
            ``direct_forces``, ``use_pbc``, ...) may be changed.
        source_blocks: provenance only: indices of the source blocks in the original unreduced model
            (written by the slicing tool; default ``range(b)``).
        scale_file: as for ``painn`` when built from scratch (fills the factors of blocks 0 .. b'-1);
            ignored with ``pretrained_checkpoint``.
        **kwargs: any other ``painn`` argument.

    Attributes:
        kept_blocks: the kept source block indices. source_blocks: their indices in the original
            model. resolved_config: self-contained kwargs (no checkpoint path, no scale file) that
            rebuild this architecture with ``num_layers=b'``.
    """

    architecture = ADAPTER
    _stock = PaiNN


@registry.register_model("painn_reduced_backbone")
class PaiNNReducedBackbone(BlockReduction, PaiNNBackbone):
    """Hydra backbone variant of :class:`PaiNNReduced` (same arguments).

    Pairs with fairchem's ``painn_energy_head`` / ``painn_force_head``. The backbone's
    ``pretrained_checkpoint`` loads the backbone weights; fairchem's ``hydra`` model builds the heads
    fresh. To start with the pre-trained heads, slice the checkpoint with ``tools/slice_checkpoint.py``
    and use fairchem's ``finetune_config: {starting_checkpoint: SLICED}``.
    """

    architecture = ADAPTER
    _stock = PaiNNBackbone
