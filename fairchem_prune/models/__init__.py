"""Models registered in fairchem's registry (imported lazily, see ``fairchem_prune._autoregister``)."""

from torch import nn


def forces_are_gradients(model: nn.Module) -> bool:
    """Whether ``model`` (GemNet-OC or EquiformerV2, reduced or not) predicts forces as -dE/dx.
    EquiformerV2 has no ``direct_forces``: its forces are always direct."""
    return bool(getattr(model, "regress_forces", False)) and not bool(getattr(model, "direct_forces", True))
