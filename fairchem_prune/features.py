"""Access to the per-block outputs and FinalMLP features of a (reduced) GemNet-OC forward pass, and
the distillation features of either architecture.

These are what block relevance (GradCAM) and node-to-node / edge-to-edge distillation use. They are
recorded with forward hooks on the FinalMLP (``out_mlp_E`` and ``out_mlp_F``, in the model itself or
in a hydra model's heads), so the model's forward pass stays fairchem's and nothing is recorded
outside the context manager. EquiformerV2's are in :mod:`fairchem_prune.models.equiformer_v2_reduced`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class FinalMLPFeatures:
    """Features of the last forward pass inside :func:`capture_final_mlp_features`.

    Shapes, with b' kept interaction blocks and P = b' + 1 partitions:
        node_input: f for the energy branch, (|V|, d_atom * P) = concat(f_1, ..., f_P).
        edge_input: f for the force branch, (|E|, d_edge * P); None without a direct-force branch.
        node_layers: output of each ``out_mlp_E`` layer, each (|V|, d_atom).
        edge_layers: output of each ``out_mlp_F`` layer, each (|E|, d_edge); empty without one.
    The tensors are part of the autograd graph: ``torch.autograd.grad(loss, features.node_input)``
    gives dL/df.
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
    """The FinalMLPs of ``model`` by branch (``out_mlp_E``, ``out_mlp_F`` if present); ValueError if
    it has none or an ambiguous set."""
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


@contextmanager
def capture_final_mlp_features(model: nn.Module) -> Iterator[FinalMLPFeatures]:
    """Record the FinalMLP inputs and layer outputs of every forward pass of ``model`` (a
    ``gemnet_oc`` / ``gemnet_oc_reduced`` model or a hydra model with their heads) in the yielded
    :class:`FinalMLPFeatures`, each pass replacing the previous one."""
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


@contextmanager
def capture_distillation_features(model: nn.Module, architecture: str) -> Iterator[tuple[list, list]]:
    """Record, in each forward pass of ``model``, the features that node-to-node (n2n) and
    edge-to-edge (e2e) distillation compare. Yields ``(node, edge)``, two lists refilled by each pass:

    * ``"gemnet_oc"``: the output of each node (energy) FinalMLP layer, each (|V|, d_atom), and of
      each edge (force) FinalMLP layer, each (|E|, d_edge) (empty without a direct-force branch);
    * ``"equiformer_v2"``: the final node embedding that the heads read, one tensor
      (|V|, sum (lmax+1)^2, sphere_channels); no edge features (e2e is not defined).
    """
    if architecture == "equiformer_v2":
        from fairchem_prune.models.equiformer_v2_reduced import capture_node_embedding

        with capture_node_embedding(model) as node:
            yield node, []
    else:
        with capture_final_mlp_features(model) as features:
            yield features.node_layers, features.edge_layers
