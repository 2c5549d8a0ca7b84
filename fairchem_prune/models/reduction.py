"""How a reduced model is built: a stock fairchem model with b' blocks, from a source architecture
with b blocks, optionally from a pre-trained checkpoint whose kept blocks (and everything outside the
blocks) are copied over. Mixed in before the stock class by each architecture's reduced models."""

from __future__ import annotations

import copy
import inspect
import logging

from torch import nn

from fairchem_prune.architectures import Architecture
from fairchem_prune.blocks import kept_with_origin
from fairchem_prune.checkpoints import load_source, reject_contradictions
from fairchem_prune.errors import PruneError


class BlockReduction:
    """Constructor of a reduced model; subclasses set ``architecture`` (the adapter) and ``_stock``
    (the stock class they also derive from, after this one).

    Args (besides the stock model's own, given as keywords):
        <block_key> (e.g. ``num_layers``): blocks b of the source architecture. Read from
            ``pretrained_checkpoint`` when one is given (then it may be left out).
        num_blocks_kept: keep the first b' blocks (1 <= b' <= b). Default: all.
        kept_blocks: or keep this explicit strictly increasing list of 0-based source block indices.
        pretrained_checkpoint: fairchem checkpoint of the same architecture (monolithic, reduced or a
            hydra model) to take the architecture and weights from (EMA weights when it has them).
            Shape hyperparameters (the adapter's ``shape_keys``) come from it and may not be
            contradicted; the others (cutoffs, neighbours, force settings, ...) may be changed.
        source_blocks: provenance only: the blocks' indices in the original unreduced model
            (written by the slicing tool; default ``range(b)``).

    Attributes:
        kept_blocks, source_blocks: the kept source block indices and their original indices.
        resolved_config: self-contained kwargs (no checkpoint path) that rebuild this architecture
            with b' blocks.
    """

    architecture: Architecture
    _stock: type[nn.Module]

    def __init__(self, num_blocks_kept: int | None = None, kept_blocks: list[int] | None = None,
                 pretrained_checkpoint: str | None = None, source_blocks: list[int] | None = None, **kwargs) -> None:
        name, key = type(self).__name__, self.architecture.block_key
        num_blocks = kwargs.pop(key, None)
        source = None
        if pretrained_checkpoint is not None:
            source = load_source(pretrained_checkpoint, architecture=self.architecture)
            if num_blocks is not None and num_blocks != source.num_blocks:
                raise PruneError(
                    f"model config sets {key}={num_blocks} but pretrained_checkpoint {pretrained_checkpoint} has "
                    f"{source.num_blocks} {self.architecture.block_kind} blocks; remove {key} and choose the blocks "
                    "with num_blocks_kept or kept_blocks"
                )
            source_config = source.core_config()
            reject_contradictions(self.architecture.shape_keys, self.architecture.defaults(), source_config, kwargs,
                                  pretrained_checkpoint)
            accepted = inspect.signature(self._stock.__init__).parameters
            # a hydra backbone's config may hold arguments the monolithic class lacks, and vice versa
            source_config = {k: v for k, v in source_config.items() if k in accepted and k != key}
            # what the adapter's source_overrides replace (e.g. fitted scale factors) comes with the weights
            kwargs = {**source_config, **kwargs, **self.architecture.source_overrides}
            num_blocks, source_blocks = source.num_blocks, source.source_blocks
        elif num_blocks is None:
            raise PruneError(f"{name} needs {key} (source blocks) or a pretrained_checkpoint")

        kept, origin = kept_with_origin(num_blocks, num_blocks_kept, kept_blocks, source_blocks,
                                        self.architecture.block_kind)
        super().__init__(**{key: len(kept)}, **kwargs)
        self.kept_blocks, self.source_blocks = kept, origin
        # self-contained: what the source overrides replace is in the state dict
        own = {k: v for k, v in kwargs.items() if k not in self.architecture.source_overrides}
        self.resolved_config = {**copy.deepcopy(own), key: len(kept), "source_blocks": self.source_blocks}
        if source is not None:
            self._load_pretrained(source, kept)

    def _load_pretrained(self, source, kept: list[int]) -> None:
        weights = self.architecture.slice_state_dict(source.monolithic_state_dict(), source.num_blocks, kept)
        own = self.state_dict()
        # drop what this model does not have (the heads for a backbone, a force head without forces)
        result = self.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
        name = type(self).__name__
        if result.missing_keys:
            logging.info(f"{name}: not in {source.path}, freshly initialised: {result.missing_keys}")
        logging.info(f"{name}: kept blocks {kept} of {source.num_blocks} from {source.path} "
                     f"({'EMA' if source.used_ema else 'raw'} weights)")
