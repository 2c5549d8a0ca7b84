"""Models registered in fairchem's registry (imported lazily, see ``fairchem_prune._autoregister``)."""

from torch import nn


def forces_are_gradients(model: nn.Module) -> bool:
    """Whether ``model`` (GemNet-OC or EquiformerV2, reduced or not) predicts forces as -dE/dx.
    EquiformerV2 has no ``direct_forces``: its forces are always direct."""
    return bool(getattr(model, "regress_forces", False)) and not bool(getattr(model, "direct_forces", True))


def check_training_data(model: nn.Module, dataset) -> None:
    """Raise PruneError before training if ``model`` cannot run on the structures of ``dataset`` (a
    fairchem dataset, or None): the model's own ``check_input`` (e.g. GemNet-OC's quadruplet tags)
    is asked about the first structure."""
    check = getattr(model, "check_input", None)
    if check is not None and dataset is not None and len(dataset):
        check(dataset[0])
