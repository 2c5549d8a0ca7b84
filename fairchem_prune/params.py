"""Parameter counts of models and of model configs."""

from __future__ import annotations

import copy

import torch


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model`` (shared tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_config_parameters(model_config: dict) -> int:
    """Parameters of the model a fairchem ``model:`` config describes, built on the ``meta``
    device (no memory, no initialisation cost; a 160M-parameter GemNet-OC takes ~1 s)."""
    from fairchem.core.common.registry import registry
    import fairchem.core.models.gemnet_oc.gemnet_oc  # noqa: F401  (registers gemnet_oc)

    config = copy.deepcopy(model_config)
    with torch.device("meta"):
        model = registry.get_model_class(config.pop("name"))(**config)
    return count_parameters(model)
