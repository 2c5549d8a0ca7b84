"""Models registered in fairchem's registry (imported lazily, see ``fairchem_prune._autoregister``):
one module per architecture, its reduced model and backbone, built by :mod:`.reduction`."""

from torch import nn


def check_training_data(model: nn.Module, dataset) -> None:
    """Raise PruneError before training if ``model`` cannot run on the structures of ``dataset`` (a
    fairchem dataset, or None): the model's own ``check_input`` (e.g. quadruplet tags that some
    architectures need) is asked about the first structure."""
    check = getattr(model, "check_input", None)
    if check is not None and dataset is not None and len(dataset):
        check(dataset[0])
