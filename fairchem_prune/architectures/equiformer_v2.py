"""EquiformerV2 (fairchem's deprecated monolithic ``equiformer_v2`` that fairchem 1.10 still registers,
and the hydra ``equiformer_v2_backbone``).

Blocks: transformer block i is ``blocks.i``. The heads read the final norm of the last block's
output, whose width does not depend on the number of blocks, so there is no concatenating readout to
slice: slicing is a renumbering. Relevance scores the output x_k of each block, (|V|, sum (lmax+1)^2,
sphere_channels), named ``b_k`` for block k of the original model; x_k also feeds the later blocks,
so dL0/dx_k includes every path through them. Distillation compares the final node embedding (the
norm's output that both heads read); there are no edge features.
"""

from __future__ import annotations

from fairchem_prune.architectures.base import Architecture, BlockPattern, core_of, signature_defaults


class EquiformerV2(Architecture):
    label = "EquiformerV2"
    block_kind = "transformer"
    block_key = "num_layers"
    stock_models = ("equiformer_v2",)
    stock_backbones = ("equiformer_v2_backbone",)
    reduced_model = "equiformer_v2_reduced"
    reduced_backbone = "equiformer_v2_reduced_backbone"
    model_module = "fairchem_prune.models.equiformer_v2_reduced"
    fairchem_modules = ("fairchem.core.models.equiformer_v2.equiformer_v2",
                        "fairchem.core.models.equiformer_v2.equiformer_v2_deprecated")
    head_layers = {
        "equiformer_v2_energy_head": ("energy_block",),
        "equiformerV2_scalar_head": ("energy_block",),
        "equiformer_v2_force_head": ("force_block",),
        "equiformerV2_vector_head": ("force_block",),
    }
    shape_keys = (
        "max_num_elements", "sphere_channels", "attn_hidden_channels", "num_heads", "attn_alpha_channels",
        "attn_value_channels", "ffn_hidden_channels", "norm_type", "lmax_list", "mmax_list", "grid_resolution",
        "edge_channels", "use_atom_edge_embedding", "share_atom_edge_embedding", "use_m_share_rad",
        "distance_function", "attn_activation", "use_s2_act_attn", "use_attn_renorm", "ffn_activation",
        "use_gate_act", "use_grid_mlp", "use_sep_s2_act", "load_energy_lin_ref",
    )
    block_patterns = (BlockPattern.of("blocks"),)
    readout_input = "norm"  # the final norm: its output (|V|, sum (lmax+1)^2, sphere_channels) feeds both heads
    distill_config = "s2ef/eqv2_distill_base.yml"
    demo_finetune_config = "finetune/demo_ethanol_eqv2_base.yml"
    finetune_recipe = "finetune/eqv2_recipe.yml"
    parameter_rules = (
        (r"sphere_embedding\.", "embedding"),
        (r"(edge_degree_embedding|norm|energy_block|force_block)\.", "shared"),
    )

    def defaults(self) -> dict:
        from fairchem.core.models.equiformer_v2.equiformer_v2 import EquiformerV2Backbone

        # the backbone's signature; lmax_list / mmax_list are None there and set in the body
        return {**signature_defaults(EquiformerV2Backbone), "lmax_list": [6], "mmax_list": [2]}

    def forces_are_gradients(self, model) -> bool:
        return False  # EquiformerV2's forces are always direct

    def block_output(self, output):
        """A block's SO3_Embedding -> its coefficients, (|V|, sum (lmax+1)^2, sphere_channels): the
        l = 0 column invariant. The last block's is before the final norm."""
        return output.embedding

    def feature_widths(self, model) -> dict:
        core = core_of(model)
        return {"node embedding": (core.sphere_channels, list(core.lmax_list), list(core.mmax_list))}


ADAPTER = EquiformerV2()
