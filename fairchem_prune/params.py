"""Parameter counts of models and of model configs."""

from __future__ import annotations

import copy
import importlib

import torch


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (shared tensors counted once); ``trainable_only`` leaves out
    those that do not require gradients (fitted scale factors)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_config_parameters(model_config: dict, trainable_only: bool = False) -> int:
    """Parameters of the model a fairchem ``model:`` config describes (monolithic or hydra, stock or
    reduced, of any architecture of :mod:`fairchem_prune.architectures`). Built on the ``meta``
    device (no memory, no initialisation cost; a 160M-parameter model takes ~1 s), or on the CPU
    when the constructor reads tensor values (~3 s for 31M parameters)."""
    from fairchem.core.common.registry import registry

    from fairchem_prune import architectures

    architecture = architectures.of_config(model_config, "the model config")
    architecture.register_stock()
    importlib.import_module(architecture.model_module)
    config = copy.deepcopy(model_config)
    model_class = registry.get_model_class(config.pop("name"))
    try:
        with torch.device("meta"):
            model = model_class(**config)
    except (RuntimeError, NotImplementedError):  # "Tensor.item() cannot be called on meta tensors"
        model = model_class(**config)
    return count_parameters(model, trainable_only)
