"""Parameter counts of models and of model configs."""

from __future__ import annotations

import copy

import torch


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared tensors counted once); ``trainable_only`` leaves out
    those that do not require gradients (GemNet-OC's fitted scale factors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_config_parameters(model_config: dict, trainable_only: bool = False) -> int:
    """Parameters of the model a fairchem ``model:`` config describes (GemNet-OC or EquiformerV2,
    stock or reduced). Built on the ``meta`` device (no memory, no initialisation cost; a
    160M-parameter GemNet-OC takes ~1 s), or on the CPU when the constructor reads tensor values
    (EquiformerV2: ~3 s for 31M parameters)."""
    from fairchem.core.common.registry import registry
    import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (registers fairchem's equiformer_v2 too)
    import fairchem_prune.models.gemnet_oc_reduced  # noqa: F401  (registers fairchem's gemnet_oc too)

    config = copy.deepcopy(model_config)
    model_class = registry.get_model_class(config.pop("name"))
    try:
        with torch.device("meta"):
            model = model_class(**config)
    except RuntimeError:  # "Tensor.item() cannot be called on meta tensors"
        model = model_class(**config)
    return count_parameters(model, trainable_only)
