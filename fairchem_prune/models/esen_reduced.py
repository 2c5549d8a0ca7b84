"""``esen_reduced_backbone``: fairchem's eSEN backbone keeping a subset of its message-passing blocks.

The reduced backbone *is* a stock ``esen_backbone`` with b' = len(kept) layers: the forward pass is
fairchem's, unchanged. What this module adds is how it is built, from a source with b blocks,
optionally from a pre-trained checkpoint whose kept blocks are copied over (see
:mod:`fairchem_prune.architectures.esen`). The embeddings and the final norm are copied unchanged;
the heads read the final node embedding, of the same width whatever b', so nothing needs slicing.
"""

from __future__ import annotations

from fairchem.core.common.registry import registry
from fairchem.core.models.esen.esen import eSEN_Backbone

from fairchem_prune.architectures.esen import ADAPTER
from fairchem_prune.models.reduction import BlockReduction


@registry.register_model("esen_reduced_backbone")
class ESENReducedBackbone(BlockReduction, eSEN_Backbone):
    """eSEN hydra backbone (fairchem's ``esen_backbone``) keeping a chosen, ordered subset of the
    message-passing blocks of a source model.

    Args:
        num_layers: message-passing blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices.
        pretrained_checkpoint: fairchem checkpoint of a hydra model with an ``esen_backbone`` or
            ``esen_reduced_backbone`` backbone to take the architecture and backbone weights from (EMA
            weights when it has them). Shape hyperparameters (the adapter's ``shape_keys``:
            ``max_num_elements``, ``sphere_channels``, ``lmax``, ``mmax``, ``grid_resolution``,
            ``cutoff``, ``edge_channels``, ``distance_function``, ``num_distance_basis``,
            ``hidden_channels``, ``norm_type``, ``act_type``, ``mlp_type``, ``use_envelope``) come from
            it and may not be contradicted; the others (``max_neighbors``, ``use_pbc``,
            ``use_pbc_single``, ``otf_graph``, ``regress_forces``, ``regress_stress``,
            ``direct_forces``, ``activation_checkpointing``) may be changed.
        source_blocks: provenance only: indices of the source blocks in the original unreduced model
            (written by the slicing tool; default ``range(b)``).
        **kwargs: any other ``esen_backbone`` argument (defaults: fairchem's).

    Pairs with fairchem's ``esen_mlp_efs_head`` (energy in eV, forces in eV/Å and stress in eV/Å^3 by
    autograd; it sets ``direct_forces=False``), ``esen_mlp_energy_head`` and
    ``esen_linear_force_head``. The backbone's ``pretrained_checkpoint`` loads the backbone weights;
    fairchem's ``hydra`` model builds the heads fresh. To start with the pre-trained heads, slice the
    checkpoint with ``tools/slice_checkpoint.py`` and use fairchem's
    ``finetune_config: {starting_checkpoint: SLICED}`` (the distill trainer copies the teacher's heads
    itself).

    Attributes:
        kept_blocks: the kept source block indices. source_blocks: their indices in the original
            model. resolved_config: self-contained kwargs (no checkpoint path) that rebuild this
            architecture with ``num_layers=b'``.
    """

    architecture = ADAPTER
    _stock = eSEN_Backbone
