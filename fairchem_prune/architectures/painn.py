"""PaiNN (fairchem's monolithic ``painn`` and the hydra ``painn_backbone`` with ``painn_energy_head`` /
``painn_force_head``).

Blocks: message-passing block i is ``message_layers.i`` + ``update_layers.i`` + the fitted scale
factor ``upd_out_scalar_scale_i`` applied to the block's scalar output. Each block maps the node
features (x, vec) to (x', vec') of the same widths:

    x: (|V|, hidden_channels) invariant scalars, vec: (|V|, 3, hidden_channels) equivariant vectors.

The readout (``out_energy`` on x, the direct-force ``out_forces`` on (x, vec)) reads the last block's
output only, so slicing is a renumbering (the scale factors of the kept blocks travel with them).
Relevance scores each block's scalar output x_k (the output of its scale factor), named ``b_k`` for
block k of the original model. Distillation compares the final x and, where there is a direct-force
readout, the vec it reads; there are no edge features.
"""

from __future__ import annotations

import contextlib

from torch import nn

from fairchem_prune.architectures.base import Architecture, BlockPattern, core_of, module_blocks

#: the constructor defaults that PaiNN replaces in its body (None in its signature)
_BODY_DEFAULTS = dict(rbf={"name": "gaussian"}, envelope={"name": "polynomial", "exponent": 5})
SCALE_PREFIX = "upd_out_scalar_scale_"


def scale_factors(core: nn.Module) -> list[nn.Module]:
    """The ScaleFactor of each block of ``core`` (``upd_out_scalar_scale_0 .. b-1``), in order."""
    return [getattr(core, f"{SCALE_PREFIX}{i}") for i in range(len(core.message_layers))]


def force_readouts(model: nn.Module) -> list[nn.Module]:
    """The direct-force readouts (``out_forces``: PaiNNOutput) of ``model`` or of its hydra heads."""
    from fairchem.core.models.painn.painn import PaiNNOutput

    return [m for m in model.modules() if isinstance(m, PaiNNOutput)]


class PaiNN(Architecture):
    label = "PaiNN"
    block_kind = "message-passing"
    block_key = "num_layers"
    stock_models = ("painn",)
    stock_backbones = ("painn_backbone",)
    reduced_model = "painn_reduced"
    reduced_backbone = "painn_reduced_backbone"
    model_module = "fairchem_prune.models.painn_reduced"
    fairchem_modules = ("fairchem.core.models.painn.painn",)
    head_layers = {"painn_energy_head": ("out_energy",), "painn_force_head": ("out_forces",)}
    atom_energy_module = "out_energy"
    shape_keys = ("hidden_channels", "num_rbf", "rbf", "envelope", "num_elements")
    source_overrides = {"scale_file": None}  # the fitted scale factors are in the state dict
    block_lists = ("message_layers", "update_layers")
    block_patterns = (BlockPattern.of("message_layers"), BlockPattern.of("update_layers"),
                      BlockPattern.of(SCALE_PREFIX))
    parameter_rules = (
        (r"atom_emb\.", "embedding"),
        (r"(radial_basis|out_energy|out_forces)\.", "shared"),
    )
    distill_config = "s2ef/painn_distill_base.yml"
    demo_finetune_config = "finetune/demo_ethanol_painn_base.yml"
    finetune_recipe = "finetune/painn_recipe.yml"

    def defaults(self) -> dict:
        return {**super().defaults(), **_BODY_DEFAULTS}

    def blocks(self, core: nn.Module) -> list[list[nn.Module]]:
        """Block i: [message_layers[i], update_layers[i], upd_out_scalar_scale_i]; the last one's
        output is the block's scalar output x_k, (|V|, hidden_channels), that relevance scores."""
        return [parts + [scale] for parts, scale in zip(module_blocks(core, *self.block_lists), scale_factors(core))]

    @contextlib.contextmanager
    def distillation_features(self, model):
        """Node features: the final x, (|V|, hidden_channels), and, with a direct-force readout, the
        vec that ``out_forces`` reads, (|V|, 3, hidden_channels); no edge features."""
        core = core_of(model)
        last = scale_factors(core)[-1]
        readouts = force_readouts(model)
        node: list = []

        def reset(_module, _args):
            node[:] = [None] * (1 + len(readouts[:1]))

        def record_x(_module, _args, output):
            node[0] = output

        def record_vec(_module, args):
            node[1] = args[1]

        handles = [model.register_forward_pre_hook(reset), last.register_forward_hook(record_x)]
        handles += [readout.register_forward_pre_hook(record_vec) for readout in readouts[:1]]
        try:
            yield node, []
        finally:
            for handle in handles:
                handle.remove()

    def feature_widths(self, model) -> dict:
        hidden = core_of(model).hidden_channels
        return {"scalar node features": hidden, "vector node features": (3, hidden) if force_readouts(model) else None}


ADAPTER = PaiNN()
