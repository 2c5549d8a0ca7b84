"""GemNet-OC (fairchem's ``gemnet_oc`` / ``gemnet_oc_backbone``; JMP's backbone).

Blocks: interaction block i is ``int_blocks.i`` plus the output block ``out_blocks.(i+1)`` that reads
it; ``out_blocks.0`` reads the embedding and belongs to it.

The FinalMLP of each branch (``out_mlp_E`` for atoms, ``out_mlp_F`` for edges) reads the concatenation
f = concat(f_1, ..., f_{b+1}) of the output-block features after the embedding (f_1) and after each of
the b interaction blocks:

    f: (|V|, d_atom * (b + 1)) for the energy branch, (|E|, d_edge * (b + 1)) for the force branch.

Partition p (0-based) of f is columns [p*d, (p+1)*d); interaction block k produces partition k + 1.
Slicing keeps the partitions of the embedding and of the kept blocks in the first FinalMLP layer g_1
(*Sliced MLP*) or leaves g_1 to a fresh initialisation (*Random MLP*). Relevance scores the
partitions f_1 .. f_{b+1} of both branches; distillation compares every FinalMLP layer's output,
node (|V|, d_atom) and edge (|E|, d_edge).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fairchem_prune.architectures.base import Architecture, BlockPattern, BranchTap
from fairchem_prune.errors import PruneError

_FIRST_MLP = re.compile(r"(^|\.)out_mlp_[EF]\.0\.linear\.weight$")


def is_first_mlp_weight(key: str) -> bool:
    """Whether ``key`` is the weight of the first FinalMLP layer g_1 (energy or force branch)."""
    return bool(_FIRST_MLP.search(key))


def kept_partitions(kept: Sequence[int]) -> list[int]:
    """FinalMLP input partitions that survive: the embedding (0) and k + 1 for each kept block k."""
    return [0] + [k + 1 for k in kept]


def slice_first_mlp_weight(weight: torch.Tensor, num_source_blocks: int, kept: Sequence[int]) -> torch.Tensor:
    """Keep the input columns of the embedding and kept-block partitions of g_1.

    Shapes: weight (d_out, d * (b + 1)) -> (d_out, d * (len(kept) + 1)).
    """
    num_partitions = num_source_blocks + 1
    if weight.shape[1] % num_partitions:
        raise PruneError(
            f"first FinalMLP layer has {weight.shape[1]} inputs, not a multiple of {num_partitions} "
            f"partitions ({num_source_blocks} blocks + embedding): the weights do not match the config"
        )
    parts = weight.split(weight.shape[1] // num_partitions, dim=1)
    return torch.cat([parts[p] for p in kept_partitions(kept)], dim=1).clone()


@dataclass
class FinalMLPFeatures:
    """Features of the last forward pass inside :func:`capture_final_mlp_features`.

    Shapes, with b' kept interaction blocks and P = b' + 1 partitions:
        node_input: f for the energy branch, (|V|, d_atom * P) = concat(f_1, ..., f_P).
        edge_input: f for the force branch, (|E|, d_edge * P); None without a direct-force branch.
        node_layers: output of each ``out_mlp_E`` layer, each (|V|, d_atom).
        edge_layers: output of each ``out_mlp_F`` layer, each (|E|, d_edge); empty without one.
    The tensors are in the autograd graph: ``torch.autograd.grad(loss, features.node_input)`` is dL/df.
    """

    num_partitions: int = 0
    node_input: torch.Tensor | None = None
    edge_input: torch.Tensor | None = None
    node_layers: list[torch.Tensor] = field(default_factory=list)
    edge_layers: list[torch.Tensor] = field(default_factory=list)

    def node_blocks(self) -> list[torch.Tensor]:
        """f_1 .. f_P of the energy branch, each (|V|, d_atom)."""
        return list(self.node_input.chunk(self.num_partitions, dim=1))

    def edge_blocks(self) -> list[torch.Tensor]:
        """f_1 .. f_P of the force branch, each (|E|, d_edge)."""
        return list(self.edge_input.chunk(self.num_partitions, dim=1))


def final_mlps(model: nn.Module) -> dict[str, nn.Sequential]:
    """The FinalMLPs of ``model`` by branch (``out_mlp_E``, ``out_mlp_F`` if present), in the model or
    in a hydra model's heads; ValueError if it has none or an ambiguous set."""
    found: dict[str, nn.Sequential] = {}
    for name, module in model.named_modules():
        branch = name.rsplit(".", 1)[-1]
        if branch in ("out_mlp_E", "out_mlp_F") and isinstance(module, nn.Sequential):
            if branch in found:
                raise ValueError(f"model has more than one {branch}; cannot tell which feeds the output")
            found[branch] = module
    if "out_mlp_E" not in found:
        raise ValueError("model has no GemNet-OC FinalMLP (out_mlp_E)")
    return found


@contextlib.contextmanager
def capture_final_mlp_features(model: nn.Module) -> Iterator[FinalMLPFeatures]:
    """Record the FinalMLP inputs and layer outputs of every forward pass of ``model`` in the yielded
    :class:`FinalMLPFeatures`, each pass replacing the previous one. Hooks only."""
    features = FinalMLPFeatures()
    handles = []
    for branch, mlp in final_mlps(model).items():
        first = mlp[0].linear
        features.num_partitions = first.in_features // first.out_features
        node = branch == "out_mlp_E"
        layers = features.node_layers if node else features.edge_layers

        def record_input(_module, args, node=node, layers=layers):
            setattr(features, "node_input" if node else "edge_input", args[0])
            layers.clear()

        def record_layer(_module, _args, output, layers=layers):
            layers.append(output)

        handles.append(mlp.register_forward_pre_hook(record_input))
        handles += [layer.register_forward_hook(record_layer) for layer in mlp]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def _mlp_signature(mlp) -> tuple | None:
    """Widths of a FinalMLP that do not depend on the number of blocks (None without one)."""
    if mlp is None:
        return None
    return mlp[0].linear.out_features, [tuple(p.shape) for p in mlp[1:].parameters()]


#: the constructor defaults that GemNetOC replaces in its body (None in its signature)
_BODY_DEFAULTS = dict(
    rbf={"name": "gaussian"}, rbf_spherical={"name": "gaussian"}, envelope={"name": "polynomial", "exponent": 5},
    cbf={"name": "spherical_harmonics"}, sbf={"name": "spherical_harmonics"}, num_mlps=1,
)


class GemNetOC(Architecture):
    label = "GemNet-OC"
    block_kind = "interaction"
    block_key = "num_blocks"
    stock_models = ("gemnet_oc",)
    stock_backbones = ("gemnet_oc_backbone",)
    reduced_model = "gemnet_oc_reduced"
    reduced_backbone = "gemnet_oc_reduced_backbone"
    model_module = "fairchem_prune.models.gemnet_oc_reduced"
    fairchem_modules = ("fairchem.core.models.gemnet_oc.gemnet_oc",)
    head_layers = {
        "gemnet_oc_energy_and_grad_force_head": ("out_mlp_E", "out_energy"),
        "gemnet_oc_force_head": ("out_mlp_F", "out_forces"),
    }
    shape_keys = (
        "num_spherical", "num_radial", "emb_size_atom", "emb_size_edge", "emb_size_trip_in",
        "emb_size_trip_out", "emb_size_quad_in", "emb_size_quad_out", "emb_size_aint_in",
        "emb_size_aint_out", "emb_size_rbf", "emb_size_cbf", "emb_size_sbf", "num_before_skip",
        "num_after_skip", "num_concat", "num_atom", "num_output_afteratom", "num_atom_emb_layers",
        "num_global_out_layers", "rbf", "rbf_spherical", "envelope", "cbf", "sbf", "activation",
        "quad_interaction", "atom_edge_interaction", "edge_atom_interaction", "atom_interaction",
        "scale_basis", "num_elements",
    )
    source_overrides = {"scale_file": None}  # the fitted scale factors are in the state dict
    block_lists = ("int_blocks",)
    block_patterns = (BlockPattern.of("int_blocks"), BlockPattern.of("out_blocks", offset=1))
    parameter_rules = (
        (r"atom_emb\.", "embedding"),
        (r"(edge_emb|mlp_(rbf|cbf|sbf)_\w+|out_mlp_[EF]|out_energy|out_forces)\.", "shared"),
    )
    has_edge_features = True
    distill_config = "s2ef/distill_base.yml"
    demo_finetune_config = "finetune/demo_ethanol_base.yml"
    finetune_recipe = "finetune/gemnet_recipe.yml"
    mlp_init_choices = ("sliced", "random")
    atom_energy_module = "out_energy"

    def defaults(self) -> dict:
        return {**super().defaults(), **_BODY_DEFAULTS}

    relevance_legend = "FinalMLP input partitions: f_1 the embedding, f_k+2 interaction block k"

    def block_names(self, source_blocks: Sequence[int]) -> list[str]:
        """``f_1`` (embedding) and ``f_{k+2}`` for each block k of the original model (kept blocks
        [0, 1, 3] give f_1, f_2, f_3, f_5)."""
        return ["f_1"] + [f"f_{k + 2}" for k in source_blocks]

    def slice_shared(self, key, value, num_blocks, kept):
        return slice_first_mlp_weight(value, num_blocks, kept) if is_first_mlp_weight(key) else value

    def is_fresh(self, key: str, mlp_init: str) -> bool:
        return mlp_init == "random" and is_first_mlp_weight(key)

    @contextlib.contextmanager
    def block_taps(self, model):
        """The FinalMLP inputs of both branches, split into their P partitions."""
        try:
            final_mlps(model)
        except ValueError as err:
            raise PruneError(f"block relevance needs a GemNet-OC model with a FinalMLP: {err}") from None
        with capture_final_mlp_features(model) as features:

            def taps() -> dict[str, BranchTap]:
                parts = features.num_partitions
                split = lambda ts: list(ts[0].chunk(parts, dim=1))  # noqa: E731
                result = {"energy": BranchTap([features.node_input], split)}
                if features.edge_input is not None:
                    result["forces"] = BranchTap([features.edge_input], split)
                return result

            yield taps

    @contextlib.contextmanager
    def distillation_features(self, model):
        """Each FinalMLP layer's output: node (|V|, d_atom) and edge (|E|, d_edge; empty without a
        direct-force branch)."""
        with capture_final_mlp_features(model) as features:
            yield features.node_layers, features.edge_layers

    def has_edge_branch(self, model) -> bool:
        return "out_mlp_F" in final_mlps(model)

    def feature_widths(self, model) -> dict:
        return {f"FinalMLPs ({layer})": _mlp_signature(getattr(model, layer, None)) for layer in ("out_mlp_E", "out_mlp_F")}


ADAPTER = GemNetOC()
