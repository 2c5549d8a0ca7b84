"""How a model builds the graphs of a batch that mixes periodic and non-periodic structures.

fairchem builds one periodic-boundary setting per batch unless the model's ``use_pbc_single`` is set:
``radius_graph_pbc`` reads the ``pbc`` flags of the batch's first structure only (``batch.pbc`` is the
structures' (3,) flags concatenated), so a slab behind a molecule gets a graph without images. Models that
must agree with one-structure-at-a-time evaluation (``OCPCalculator``), or with each other, build each
structure's graph on its own.
"""

from __future__ import annotations

import torch
from torch import nn

from fairchem_prune.architectures import core_of
from fairchem_prune.errors import PruneError


def mixes_periodicity(batch) -> bool:
    """Whether the structures of ``batch`` have different ``pbc`` flags ((3,) per structure)."""
    pbc = getattr(batch, "pbc", None)
    if not isinstance(pbc, torch.Tensor) or pbc.numel() <= 3:
        return False
    flags = pbc.reshape(-1, 3)
    return bool((flags != flags[:1]).any())


def builds_graphs_per_structure(model: nn.Module) -> bool:
    """Whether ``model`` (monolithic, or hydra: its backbone builds the graphs) has ``use_pbc_single``."""
    return bool(getattr(core_of(model), "use_pbc_single", False))


def build_graphs_per_structure(model: nn.Module, enabled: bool = True) -> None:
    """Set ``use_pbc_single`` of the module of ``model`` that builds its graphs; exact for any batch
    (each structure's graph as it would be alone), a loop over structures instead of one call."""
    core_of(model).use_pbc_single = enabled


def check_batch_graphs(model: nn.Module, batch, what: str) -> None:
    """A one-line error when ``batch`` mixes periodic and non-periodic structures and ``model`` would
    build them one setting for all."""
    if mixes_periodicity(batch) and not builds_graphs_per_structure(model):
        raise PruneError(f"a batch mixes periodic and non-periodic structures, but the {what} builds one periodic "
                         "setting per batch (fairchem reads the first structure's pbc only); set "
                         "model.use_pbc_single: true (hydra: model.backbone.use_pbc_single), or keep each "
                         "kind of structure in its own data set")
