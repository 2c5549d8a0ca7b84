"""``gemnet_oc_reduced``: fairchem's GemNet-OC keeping a subset of its interaction blocks.

The reduced model *is* a stock ``GemNetOC`` with b' = len(kept) interaction blocks (the forward
pass is fairchem's, unchanged, so it costs exactly what a b'-block GemNet-OC costs). What this
class adds is how it is built: from a source architecture with b blocks, optionally from a
pre-trained checkpoint whose kept blocks, output blocks and FinalMLP columns are copied over
(see :mod:`fairchem_prune.slicing`).
"""

from __future__ import annotations

import copy
import inspect
import logging

from fairchem.core.common.registry import registry
from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC, GemNetOCBackbone

from fairchem_prune.blocks import kept_with_origin
from fairchem_prune.checkpoints import reject_contradictions
from fairchem_prune.errors import PruneError
from fairchem_prune.slicing import MLP_INIT_CHOICES, is_first_mlp_weight, slice_state_dict

#: hyperparameters that fix the shapes of the weights: a config may not contradict the checkpoint's
ARCHITECTURE_KEYS = (
    "num_spherical", "num_radial", "emb_size_atom", "emb_size_edge", "emb_size_trip_in",
    "emb_size_trip_out", "emb_size_quad_in", "emb_size_quad_out", "emb_size_aint_in",
    "emb_size_aint_out", "emb_size_rbf", "emb_size_cbf", "emb_size_sbf", "num_before_skip",
    "num_after_skip", "num_concat", "num_atom", "num_output_afteratom", "num_atom_emb_layers",
    "num_global_out_layers", "rbf", "rbf_spherical", "envelope", "cbf", "sbf", "activation",
    "quad_interaction", "atom_edge_interaction", "edge_atom_interaction", "atom_interaction",
    "scale_basis", "num_elements",
)
_GEMNET_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(GemNetOC.__init__).parameters.items()
    if p.default is not inspect.Parameter.empty
}
# GemNetOC replaces these None defaults in its body
_GEMNET_DEFAULTS.update(
    rbf={"name": "gaussian"},
    rbf_spherical={"name": "gaussian"},
    envelope={"name": "polynomial", "exponent": 5},
    cbf={"name": "spherical_harmonics"},
    sbf={"name": "spherical_harmonics"},
)


@registry.register_model("gemnet_oc_reduced")
class GemNetOCReduced(GemNetOC):
    """GemNet-OC keeping a chosen, ordered subset of the interaction blocks of a source model.

    Args:
        num_blocks: interaction blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices
            (ablations), e.g. ``[0, 1, 2, 4]``. The embedding output f_1 is always kept.
        mlp_init: first FinalMLP layer g_1 (``out_mlp_E[0]``, ``out_mlp_F[0]``, input d x (b'+1)):
            ``"sliced"`` copies the pre-trained columns of the kept partitions, ``"random"`` keeps a
            fresh initialisation. Only used with ``pretrained_checkpoint``.
        pretrained_checkpoint: fairchem checkpoint (``gemnet_oc``, ``gemnet_oc_reduced`` or a hydra
            model with a GemNet-OC backbone) to take the architecture and weights from (EMA weights
            when it has them). Shape hyperparameters (``ARCHITECTURE_KEYS``) come from it and may
            not be contradicted; the others (cutoffs, neighbours, ``regress_forces``,
            ``direct_forces``, ``extensive``, ``otf_graph``, ...) may be changed.
        source_blocks: provenance only: indices of the source blocks in the original unreduced
            model (written by the slicing tool; default ``range(b)``).
        **kwargs: any other ``gemnet_oc`` argument.

    Attributes:
        kept_blocks: the kept source block indices. source_blocks: their indices in the original
            model. resolved_config: self-contained kwargs (no checkpoint path) that rebuild this
            architecture with ``num_blocks=b'``.
    """

    def __init__(
        self,
        num_blocks: int | None = None,
        num_blocks_kept: int | None = None,
        kept_blocks: list[int] | None = None,
        mlp_init: str = "sliced",
        pretrained_checkpoint: str | None = None,
        source_blocks: list[int] | None = None,
        **kwargs,
    ) -> None:
        if mlp_init not in MLP_INIT_CHOICES:
            raise PruneError(f"mlp_init must be one of {MLP_INIT_CHOICES}, got {mlp_init!r}")
        source = None
        if pretrained_checkpoint is not None:
            from fairchem_prune.checkpoints import load_gemnet_source

            source = load_gemnet_source(pretrained_checkpoint)
            source_config = source.core_config()
            requested = dict(kwargs, **({"num_blocks": num_blocks} if num_blocks is not None else {}))
            if requested.get("num_blocks", source.num_blocks) != source.num_blocks:
                raise PruneError(
                    f"model config sets num_blocks={num_blocks} but pretrained_checkpoint "
                    f"{pretrained_checkpoint} has {source.num_blocks} interaction blocks; remove num_blocks "
                    "and choose the blocks with num_blocks_kept or kept_blocks"
                )
            reject_contradictions(ARCHITECTURE_KEYS, _GEMNET_DEFAULTS, source_config, kwargs, pretrained_checkpoint)
            source_blocks = source.source_blocks
            num_blocks = source.num_blocks
            source_config.pop("num_blocks", None)
            source_config.pop("source_blocks", None)
            kwargs = {**source_config, **kwargs}
            kwargs.pop("scale_file", None)
        elif num_blocks is None:
            raise PruneError("gemnet_oc_reduced needs num_blocks (source blocks) or a pretrained_checkpoint")

        kept, origin = kept_with_origin(num_blocks, num_blocks_kept, kept_blocks, source_blocks)
        super().__init__(num_blocks=len(kept), **kwargs)
        self.kept_blocks, self.source_blocks = kept, origin
        self.resolved_config = {
            **copy.deepcopy({k: v for k, v in kwargs.items() if k != "scale_file"}),
            "num_blocks": len(kept),
            "source_blocks": self.source_blocks,
        }
        if source is not None:
            self._load_pretrained(source, kept, mlp_init)

    def _load_pretrained(self, source, kept: list[int], mlp_init: str) -> None:
        weights = slice_state_dict(source.monolithic_state_dict(), source.num_blocks, kept, mlp_init)
        own = self.state_dict()
        # drop what this configuration does not have (e.g. the force branch with direct_forces off)
        weights = {k: v for k, v in weights.items() if k in own}
        result = self.load_state_dict(weights, strict=False)
        fresh = [k for k in result.missing_keys if not (mlp_init == "random" and is_first_mlp_weight(k))]
        if fresh:
            logging.info(f"gemnet_oc_reduced: not in {source.path}, freshly initialised: {fresh}")
        logging.info(
            f"gemnet_oc_reduced: kept blocks {kept} of {source.num_blocks} from {source.path} "
            f"({'EMA' if source.used_ema else 'raw'} weights, mlp_init={mlp_init})"
        )


@registry.register_model("gemnet_oc_reduced_backbone")
class GemNetOCReducedBackbone(GemNetOCReduced, GemNetOCBackbone):
    """Hydra backbone variant of :class:`GemNetOCReduced` (same arguments).

    Pairs with fairchem's ``gemnet_oc_energy_and_grad_force_head`` / ``gemnet_oc_force_head``, whose
    first FinalMLP layer takes d x (b'+1) inputs. The backbone's ``pretrained_checkpoint`` loads the
    backbone weights; heads are built (fresh) by fairchem's ``hydra`` model. To start a hydra model
    with pre-trained, sliced heads, slice the checkpoint with ``tools/slice_checkpoint.py`` and use
    fairchem's ``finetune_config: {starting_checkpoint: SLICED}``.
    """
