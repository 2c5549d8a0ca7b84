"""One adapter per architecture (:class:`~fairchem_prune.architectures.base.Architecture`), found by
looking at this package: every module here but ``base`` defines ``ADAPTER``, an instance of its
subclass. Adding an architecture is adding a module here and its reduced model under
``fairchem_prune.models``; nothing else names it.

Dependencies run one way: adapters know the stock fairchem models and this package's generic helpers
(``errors``, ``blocks``), never the reduced models, sources or tools that use them.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from fairchem_prune.architectures.base import Architecture, BranchTap, core_of, core_section
from fairchem_prune.errors import PruneError

__all__ = ["Architecture", "BranchTap", "all_architectures", "by_name", "core_of", "core_section", "of_config", "of_model",
           "reduced_model_modules", "supported"]


@functools.cache
def all_architectures() -> tuple[Architecture, ...]:
    """Every adapter of this package, by module name."""
    names = sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "base")
    return tuple(importlib.import_module(f"{__name__}.{name}").ADAPTER for name in names)


def _describe(model_config: Mapping) -> str:
    name = model_config.get("name")
    if name == "hydra":
        backbone = model_config.get("backbone")
        return f"hydra model with a {backbone.get('model') if isinstance(backbone, Mapping) else None!r} backbone"
    return f"{name!r} model"


def of_config(model_config: Mapping, where: str) -> Architecture:
    """The architecture of a ``model:`` config; PruneError naming ``where`` (e.g. "checkpoint X")
    and the accepted models otherwise."""
    for architecture in all_architectures():
        if architecture.matches_config(model_config):
            return architecture
    accepted = "; ".join(f"{a.label} ({a.accepted()})" for a in all_architectures())
    raise PruneError(f"{where} holds a {_describe(model_config)}; fairchem-prune reduces {accepted}")


def of_model(model: nn.Module) -> Architecture:
    """The architecture of a built model (monolithic, hydra or backbone; reduced or stock)."""
    for architecture in all_architectures():
        if architecture.matches_model(model):
            return architecture
    raise PruneError(f"{type(core_of(model)).__name__} is not a model fairchem-prune knows "
                     f"({', '.join(a.label for a in all_architectures())})")


def supported() -> str:
    """The architectures and their accepted model names, for ``--help`` texts."""
    return "; ".join(f"{a.label}: {a.accepted()}" for a in all_architectures())


def by_name(name: str) -> Architecture:
    """The adapter whose :attr:`~Architecture.name` is ``name`` (as recorded, e.g., in the demo's
    ``teacher.json``)."""
    for architecture in all_architectures():
        if architecture.name == name:
            return architecture
    raise PruneError(f"unknown architecture {name!r}; known: {', '.join(a.name for a in all_architectures())}")


def reduced_model_modules() -> dict[str, str]:
    """Registry name of every reduced and stock model of the adapters -> the module that registers it
    (lazy registration; the reduced model's module imports the stock one, so a config naming a stock
    model works without importing fairchem's module first)."""
    return {name: a.model_module for a in all_architectures()
            for name in a.stock_models + a.stock_backbones + (a.reduced_model, a.reduced_backbone) if name}
