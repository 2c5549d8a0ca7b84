"""The interface every architecture adapter implements: what fairchem-prune needs to know about one
block-stacked fairchem model, and nothing else.

An adapter describes the *stock* fairchem model (its registry names, where its blocks are, which
hyperparameters fix the shapes of its weights, which features feed its readout, which parameters
belong to which block) and names this package's block-reduced counterpart. Generic code (sources,
slicing, relevance, distillation, layer-wise learning rates, the benchmark, the demo) asks these
questions and never names an architecture.

Key spaces: a *monolithic* state dict is the model's own (``blocks.3.x``); a hydra model's has
``backbone.`` / ``output_heads.<head>.`` prefixes, and DDP adds ``module.``. The block patterns
below match anywhere after such prefixes.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fairchem_prune.errors import PruneError
from fairchem_prune.gradcam import BranchTap  # noqa: F401  (shared with the fairchem 2 host)

#: prefixes that wrap a model's own parameter names (DDP, hydra backbone and heads)
_WRAPPERS = re.compile(r"^(?:module\.)*(?:backbone\.|output_heads\.[^.]+\.)?")


@dataclass(frozen=True)
class BlockPattern:
    """Parameter / buffer names of one part of block i: ``regex`` has one group, the block index,
    and ``offset`` is added to the block number to get the index in the name (GemNet-OC's output
    block i + 1 belongs to interaction block i)."""

    regex: re.Pattern
    offset: int = 0

    @classmethod
    def of(cls, prefix: str, offset: int = 0) -> "BlockPattern":
        """Names ``<prefix>.<i>`` (the i-th entry of a ``ModuleList``) or, for a ``prefix`` ending with
        ``_``, ``<prefix><i>`` (numbered attributes like ``upd_out_scalar_scale_<i>``), followed by
        ``.`` or the end of the name."""
        separator = "" if prefix.endswith("_") else r"\."
        return cls(re.compile(rf"(?:^|\.){re.escape(prefix)}{separator}(\d+)(?=\.|$)"), offset)


class Architecture:
    """What fairchem-prune knows about one architecture. Subclasses set the class attributes and
    override the methods whose default does not fit (see each method)."""

    #: human name and the kind of its blocks, for messages: "GemNet-OC", "interaction"
    label: str = ""
    block_kind: str = "interaction"
    #: the stock model's keyword for the number of blocks
    block_key: str = "num_layers"
    #: stock fairchem registry names: monolithic models and hydra backbones
    stock_models: tuple[str, ...] = ()
    stock_backbones: tuple[str, ...] = ()
    #: this package's reduced models (None where the architecture has no such form)
    reduced_model: str | None = None
    reduced_backbone: str | None = None
    #: module registering the reduced models; fairchem modules registering the stock names
    model_module: str = ""
    fairchem_modules: tuple[str, ...] = ()
    #: hydra head module -> the layers it owns, named as in the monolithic model
    head_layers: Mapping[str, tuple[str, ...]] = {}
    #: hyperparameters that fix the shapes of the weights: a config may not contradict the checkpoint's
    shape_keys: tuple[str, ...] = ()
    #: config settings whose values the state dict carries (e.g. ``scale_file``: the fitted scale
    #: factors): set when a checkpoint's model is rebuilt or a reduced model is built from it, and left
    #: out of a reduced model's ``resolved_config``
    source_overrides: Mapping[str, object] = {}
    #: the ``ModuleList``s whose i-th entries form block i
    block_lists: tuple[str, ...] = ("blocks",)
    #: the parts of block i in parameter / buffer names
    block_patterns: tuple[BlockPattern, ...] = ()
    #: layer-wise learning rates: (regex on the unwrapped parameter name, "embedding" | "shared");
    #: names matching ``block_patterns`` belong to their block. A name nothing claims is an error.
    parameter_rules: tuple[tuple[str, str], ...] = ()
    #: whether distillation has edge features to compare (edge-to-edge)
    has_edge_features: bool = False
    #: configs (relative to the repository's configs/) the demo includes for this architecture:
    #: distillation on the pre-training mix, and fine-tuning on the demo task
    distill_config: str = ""
    demo_finetune_config: str = ""
    #: the fine-tuning recipe of the reduced model (configs/, e.g. ``finetune/gemnet_recipe.yml``): trainer,
    #: optimiser, schedule and the model's name (hydra: backbone and heads), to which ``compress`` adds a task
    finetune_recipe: str = ""
    #: the module of the core whose output every head reads: distillation's node features, if one
    readout_input: str | None = None
    #: ``mlp_init`` choices of the slicing tool (the first readout layer); one choice: nothing to choose
    mlp_init_choices: tuple[str, ...] = ("sliced",)

    # ------------------------------------------------------------------ names and recognition
    @property
    def name(self) -> str:
        """The adapter's key: the first stock name (``gemnet_oc``)."""
        return (self.stock_models or self.stock_backbones)[0]

    def monolithic_names(self) -> tuple[str, ...]:
        return self.stock_models + ((self.reduced_model,) if self.reduced_model else ())

    def backbone_names(self) -> tuple[str, ...]:
        return self.stock_backbones + ((self.reduced_backbone,) if self.reduced_backbone else ())

    def accepted(self) -> str:
        """The accepted model configs, for messages."""
        parts = list(self.monolithic_names())
        if self.backbone_names():
            parts.append(f"hydra with a {' / '.join(self.backbone_names())} backbone")
        return ", ".join(parts)

    def matches_config(self, model_config: Mapping) -> bool:
        """Whether a ``model:`` config (``{"name": ..., ...}``) is of this architecture."""
        if model_config.get("name") == "hydra":
            backbone = model_config.get("backbone")
            return isinstance(backbone, Mapping) and backbone.get("model") in self.backbone_names()
        return model_config.get("name") in self.monolithic_names()

    def register_stock(self) -> None:
        """Import the fairchem modules that register the stock names (and hydra)."""
        importlib.import_module("fairchem.core.models.base")
        for module in self.fairchem_modules:
            importlib.import_module(module)

    def stock_classes(self) -> tuple[type, ...]:
        from fairchem.core.common.registry import registry

        self.register_stock()
        return tuple(registry.get_model_class(name) for name in self.stock_models + self.stock_backbones)

    def matches_model(self, model: nn.Module) -> bool:
        """Whether ``model`` (monolithic, a hydra model or its backbone) is of this architecture."""
        return isinstance(core_of(model), self.stock_classes())

    def defaults(self) -> dict:
        """The stock constructor's defaults (of the first stock name), for :attr:`shape_keys`."""
        from fairchem.core.common.registry import registry

        self.register_stock()
        return signature_defaults(registry.get_model_class(self.name))

    def with_core(self, model_config: Mapping, core: Mapping, reduced: bool = True) -> dict:
        """A copy of a monolithic or hydra ``model:`` config whose block-holding section
        (:func:`core_section`) is ``core``, named as this architecture's reduced model (or, with
        ``reduced=False``, its stock model); a hydra config keeps its heads and other settings."""
        core = {k: copy.deepcopy(v) for k, v in core.items() if k not in ("name", "model")}
        if model_config.get("name") != "hydra":
            return {"name": self.reduced_model if reduced else self.stock_models[0], **core}
        config = copy.deepcopy(dict(model_config))
        config["backbone"] = {"model": self.reduced_backbone if reduced else self.stock_backbones[0], **core}
        return config

    # ------------------------------------------------------------------ blocks
    def blocks(self, core: nn.Module) -> list[list[nn.Module]]:
        """The modules forming each block of ``core`` (a monolithic model or a backbone), in order:
        the i-th entry of each ``ModuleList`` named in :attr:`block_lists`."""
        return module_blocks(core, *self.block_lists)

    def num_blocks(self, core: nn.Module) -> int:
        return len(self.blocks(core))

    def source_blocks(self, core: nn.Module) -> list[int]:
        """The indices of ``core``'s blocks in the original unreduced model (a reduced model records
        them; a stock model's are 0..b-1)."""
        return list(getattr(core, "source_blocks", range(self.num_blocks(core))))

    def block_names(self, source_blocks: Sequence[int]) -> list[str]:
        """Names of the per-block features that relevance scores (``b_k`` for original block k)."""
        return [f"b_{k}" for k in source_blocks]

    #: what the :meth:`block_names` mean, for figure captions
    relevance_legend: str = "b_k: the output of block k of the original model"
    #: the module whose output (N_atoms, 1) holds each atom's energy before the sum (None: unknown)
    atom_energy_module: str | None = None

    def removable_block_names(self, source_blocks: Sequence[int]) -> list[str]:
        """The :meth:`block_names` entries that are blocks (ablation removes them one at a time)."""
        return self.block_names(source_blocks)[-len(source_blocks):]

    # ------------------------------------------------------------------ weights
    def block_of_key(self, key: str) -> tuple[BlockPattern, re.Match, int] | None:
        """(pattern, match, block index) if state-dict entry ``key`` lies in a block, else None."""
        for pattern in self.block_patterns:
            match = pattern.regex.search(key)
            if match is not None:
                return pattern, match, int(match.group(1)) - pattern.offset
        return None

    def slice_state_dict(self, state_dict: Mapping[str, torch.Tensor], num_blocks: int, kept: Sequence[int],
                         mlp_init: str = "sliced") -> dict[str, torch.Tensor]:
        """State dict (any key space) keeping blocks ``kept`` (0-based, increasing), renumbered
        0..b'-1; entries outside the blocks unchanged. With a ``mlp_init`` other than ``"sliced"``
        the entries :meth:`is_fresh` names are left out (the model keeps its own initialisation)."""
        position = {k: j for j, k in enumerate(kept)}
        sliced = {}
        for key, value in state_dict.items():
            if self.is_fresh(key, mlp_init):
                continue
            found = self.block_of_key(key)
            if found is None:
                sliced[key] = self.slice_shared(key, value, num_blocks, kept)
                continue
            pattern, match, block = found
            if block < 0:  # e.g. GemNet-OC's embedding output block: not a block
                sliced[key] = value
            elif block in position:
                start, end = match.span(1)
                sliced[key[:start] + str(position[block] + pattern.offset) + key[end:]] = value
        return sliced

    def slice_shared(self, key: str, value: torch.Tensor, num_blocks: int, kept: Sequence[int]) -> torch.Tensor:
        """An entry outside the blocks whose shape depends on the blocks (GemNet-OC's first FinalMLP
        layer); default: unchanged."""
        return value

    def is_fresh(self, key: str, mlp_init: str) -> bool:
        """Whether entry ``key`` keeps a fresh initialisation with ``mlp_init`` (default: none)."""
        return False

    def check_mlp_init(self, mlp_init: str) -> None:
        if mlp_init not in self.mlp_init_choices:
            if len(self.mlp_init_choices) == 1:
                raise PruneError(f"mlp_init={mlp_init!r}: {self.label} has no first readout layer to re-initialise "
                                 f"(it reads the last block's output, whatever the blocks kept); leave mlp_init out")
            raise PruneError(f"mlp_init must be one of {self.mlp_init_choices}, got {mlp_init!r}")

    # ------------------------------------------------------------------ features
    @contextlib.contextmanager
    def block_taps(self, model: nn.Module) -> Iterator[Callable[[], dict[str, BranchTap]]]:
        """Record the per-block features of ``model``'s forward passes; yields a function returning
        the :class:`BranchTap` of each branch (``energy``, ``forces`` where present) of the last
        pass. Default: the output of each block (its node features) as one ``energy`` branch."""
        with self.capture_block_outputs(model) as outputs:
            yield lambda: {"energy": BranchTap(list(outputs), list)}

    @contextlib.contextmanager
    def differentiable_forces(self, model: nn.Module) -> Iterator[None]:
        """Within the context, ``model``'s forces are differentiable functions of the positions in any
        mode (force-Jacobian distillation of an eval-mode teacher). Default: nothing to change (direct
        forces are; gradient forces computed with a graph in every mode are)."""
        yield

    def block_output(self, output) -> torch.Tensor:
        """The node features in the output of a block's last module (default: the output itself)."""
        return output

    @contextlib.contextmanager
    def capture_block_outputs(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """A list that after each forward pass holds the node features after each block: the
        :meth:`block_output` of the last module of each of :meth:`blocks`."""
        core = core_of(model)
        with capture_outputs(core, [parts[-1] for parts in self.blocks(core)], self.block_output) as outputs:
            yield outputs

    @contextlib.contextmanager
    def distillation_features(self, model: nn.Module) -> Iterator[tuple[list, list]]:
        """Record, in each forward pass, the features that node-to-node and edge-to-edge
        distillation compare: yields ``(node, edge)``, two lists refilled by each pass. Default: the
        output of :attr:`readout_input`, one tensor; no edge features."""
        if self.readout_input is None:
            raise NotImplementedError(f"{self.label}: no readout input named; override distillation_features")
        core = core_of(model)
        with capture_outputs(core, [getattr(core, self.readout_input)]) as node:
            yield node, []

    @contextlib.contextmanager
    def atom_energies(self, model: nn.Module) -> Iterator[list[torch.Tensor]]:
        """Record, in each forward pass, each atom's energy contribution before the sum over the
        structure (per-atom energy distillation): yields a list refilled with one (N_atoms,) tensor by
        each pass, in the model's (normalised) energy units. The module is the one named by
        :attr:`atom_energy_module` (a module name, or the end of a dotted one in a hydra head)."""
        if self.atom_energy_module is None:
            raise PruneError(f"per-atom energies are not available for {self.label}: its adapter names no "
                             "per-atom energy module; set task.distill.atom_energy_weight: 0")
        model = getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        found = [m for name, m in model.named_modules()
                 if name == self.atom_energy_module or name.endswith("." + self.atom_energy_module)]
        if len(found) != 1:
            raise PruneError(f"{self.label}: expected one per-atom energy module {self.atom_energy_module!r}, "
                             f"found {len(found)}")
        with capture_outputs(model, found, pick=lambda output: output.reshape(-1)) as energies:
            yield energies

    def has_edge_branch(self, model: nn.Module) -> bool:
        """Whether ``model`` has the edge features of :meth:`distillation_features`."""
        return self.has_edge_features

    def feature_widths(self, model: nn.Module) -> dict:
        """Widths of the compared features, which do not depend on the number of blocks (student and
        teacher must agree)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ training
    def parameter_block(self, name: str) -> int | None:
        """Layer-wise learning rates: the block of parameter ``name`` (any key space): its index,
        -1 for the embedding, None for parameters shared by every block (base rate). PruneError for
        a parameter no rule claims."""
        own = _WRAPPERS.sub("", name)
        found = self.block_of_key(own)
        if found is not None:
            return max(found[2], -1)
        for regex, kind in self.parameter_rules:
            if re.match(regex, own):
                return -1 if kind == "embedding" else None
        raise PruneError(f"parameter {name} of the {self.label} model belongs to no block, the embedding or the "
                         "shared layers that fairchem-prune knows; layer-wise learning rates cannot place it "
                         "(please report this with the model config)")

    def forces_are_gradients(self, model: nn.Module) -> bool:
        """Whether ``model`` predicts forces by differentiating (then inference needs autograd)."""
        core = core_of(model)
        return bool(getattr(core, "regress_forces", False)) and not bool(getattr(core, "direct_forces", True))


def core_of(model: nn.Module) -> nn.Module:
    """The module holding the blocks: the model itself or a hydra model's backbone (DDP unwrapped)."""
    model = getattr(model, "module", model) if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    backbone = getattr(model, "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else model


def module_blocks(core: nn.Module, *attributes: str) -> list[list[nn.Module]]:
    """Blocks made of the i-th entry of each named ``ModuleList`` of ``core`` (PaiNN: message and
    update layer)."""
    lists = [getattr(core, name) for name in attributes]
    return [list(parts) for parts in zip(*lists)]


def core_section(model_config: Mapping) -> dict:
    """The section of a ``model:`` config that holds the blocks: the config itself, or a hydra
    model's backbone (the same object, not a copy)."""
    return model_config["backbone"] if model_config.get("name") == "hydra" else model_config


def signature_defaults(cls: type) -> dict:
    """The keyword defaults of ``cls.__init__``."""
    parameters = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in parameters.items() if p.default is not inspect.Parameter.empty}


@contextlib.contextmanager
def capture_outputs(owner: nn.Module, modules: Sequence[nn.Module],
                    pick: Callable[[object], torch.Tensor] = lambda output: output) -> Iterator[list[torch.Tensor]]:
    """Record ``pick(output)`` of each of ``modules`` in every forward pass of ``owner`` (the module
    that runs them). Yields a list that after a pass holds one tensor per module, in the autograd
    graph, each pass replacing the previous one's (by index: activation checkpointing may re-run a
    module). Hooks only: the forward pass is unchanged, nothing is recorded outside the context."""
    outputs: list[torch.Tensor] = []

    def reset(_module, _args, _kwargs=None):
        outputs[:] = [None] * len(modules)

    def record(_module, _args, output, index):
        outputs[index] = pick(output)

    handles = [owner.register_forward_pre_hook(reset)]
    handles += [m.register_forward_hook(functools.partial(record, index=i)) for i, m in enumerate(modules)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
