"""Block reduction of a fairchem 2 inference checkpoint (UMA, eSEN): an ordinary inference checkpoint
of the reduced model.

Both weight sets are sliced the same way (raw ``model_state_dict``, what fine-tuning starts from, and
``ema_state_dict``, what inference uses); ``num_layers`` and a listed ``layers_moe`` follow the kept
blocks (:func:`fairchem_prune.fairchem2.escn_md.reduced_config`); ``tasks_config`` and every other entry
are copied unchanged. The result is checked by building it with fairchem's own loader, strictly, for
both weight sets, before it is written.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from fairchem_prune.blocks import SliceReport, kept_with_origin
from fairchem_prune.fairchem2 import escn_md
from fairchem_prune.fairchem2.checkpoints import (
    has_ema,
    hydra_model,
    load_model,
    read_inference_checkpoint,
    resolve_path,
    save_inference_checkpoint,
    source_blocks,
)
from fairchem_prune.files import check_output


def count_parameters(model) -> int:
    return sum(p.numel() for p in hydra_model(model).parameters())


def reduced_checkpoint(checkpoint, kept: Sequence[int], origin: Sequence[int], source: Path):
    """A new ``MLIPInferenceCheckpoint`` keeping blocks ``kept`` of ``checkpoint`` (``origin``: their
    indices in the original model, recorded in ``fairchem_prune``)."""
    reduced = copy.copy(checkpoint)
    reduced.model_config = escn_md.reduced_config(checkpoint.model_config, kept)
    reduced.model_state_dict = escn_md.slice_state_dict(checkpoint.model_state_dict, kept)
    reduced.ema_state_dict = escn_md.slice_state_dict(checkpoint.ema_state_dict, kept) if checkpoint.ema_state_dict else {}
    reduced.tasks_config = copy.deepcopy(checkpoint.tasks_config)
    reduced.fairchem_prune = {"source_checkpoint": str(source), "kept_blocks": list(kept), "source_blocks": list(origin)}
    return reduced


def slice_inference_checkpoint(checkpoint: str | Path, output: str | Path, num_blocks_kept: int | None = None,
                               kept_blocks: Sequence[int] | None = None, force: bool = False) -> SliceReport:
    """Write to ``output`` the inference checkpoint of ``checkpoint`` with the first ``num_blocks_kept``
    blocks or the blocks ``kept_blocks``. It loads with ``load_predict_unit``, ``FAIRChemCalculator`` and
    as the ``checkpoint_location`` of fairchem's ``initialize_finetuning_model``."""
    source, output = resolve_path(checkpoint), Path(output)
    check_output(source, output, force, "sliced model")
    original = read_inference_checkpoint(source)
    b = escn_md.num_blocks(original.model_config, f"checkpoint {source}")
    kept, origin = kept_with_origin(b, num_blocks_kept, kept_blocks, source_blocks(original, b), escn_md.BLOCK_KIND)
    reduced = reduced_checkpoint(original, kept, origin, source)
    weight_sets = [False, True] if has_ema(original) else [False]
    params_before = count_parameters(load_model(original, source, use_ema=False))
    for use_ema in weight_sets:  # fairchem's own constructor and loader take it, strictly
        model = load_model(reduced, output, use_ema=use_ema)
    save_inference_checkpoint(reduced, output)
    return SliceReport(
        source=source, output=output, kept_blocks=kept, source_blocks=origin, num_source_blocks=b,
        params_before=params_before, params_after=count_parameters(model),
        weights="raw and EMA" if len(weight_sets) == 2 else "raw", mlp_init=None, block_kind=escn_md.BLOCK_KIND,
    )
