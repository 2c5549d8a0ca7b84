"""eSEN (fairchem 1.10's hydra-only ``esen_backbone`` with the ``esen_mlp_efs_head``,
``esen_mlp_energy_head`` and ``esen_linear_force_head`` heads; e.g. eSEN-30M-OAM).

Blocks: message-passing block i is ``blocks.i`` (an ``eSEN_Block``: norm, edge-wise SO(2)
convolution, norm, atom-wise MLP, each with a residual), mapping node features x of shape
(|V|, (lmax+1)^2, sphere_channels) to the same shape. Before the blocks, ``sphere_embedding``
(atom types -> the l = 0 channel) and ``edge_degree_embedding`` (with ``source_embedding``,
``target_embedding`` and the radial ``distance_expansion``) make x_0; after them the final
``norm`` gives the node embedding that every head reads (the energy MLP reads its l = 0 column,
the direct-force head its l <= 1 columns). Its width does not depend on the number of blocks, so
slicing is a renumbering.

Relevance scores the output x_k of each block, (|V|, (lmax+1)^2, sphere_channels), named ``b_k``
for block k of the original model; x_k also feeds the later blocks, so dL0/dx_k includes every path
through them. With the ``esen_mlp_efs_head`` forces (eV/Å) and stress (eV/Å^3) are gradients of the
energy (eV). Distillation compares the final node embedding (the norm's output), one tensor
(|V|, (lmax+1)^2, sphere_channels); there are no edge features.
"""

from __future__ import annotations

import contextlib

from fairchem_prune.architectures.base import Architecture, BlockPattern, core_of

#: heads whose forces (and stress) are gradients of their energy
_GRADIENT_HEADS = ("MLP_EFS_Head",)


class ESEN(Architecture):
    """eSEN adapter. ``cutoff`` is a shape key: the Gaussian centres of ``distance_expansion``
    (linspace(0, cutoff), a state-dict buffer) come from the checkpoint while their width, the
    envelope and the edge-degree rescaling follow the config's cutoff, so another cutoff would feed
    the trained radial layers a basis they never saw. The constructor's defaults are all in its
    signature (the base :meth:`~Architecture.defaults` reads them)."""

    label = "eSEN"
    block_kind = "message-passing"
    block_key = "num_layers"
    stock_models = ()
    stock_backbones = ("esen_backbone",)
    reduced_model = None
    reduced_backbone = "esen_reduced_backbone"
    model_module = "fairchem_prune.models.esen_reduced"
    fairchem_modules = ("fairchem.core.models.esen.esen",)
    head_layers = {
        "esen_mlp_efs_head": ("energy_block",),
        "esen_mlp_energy_head": ("energy_block",),
        "esen_linear_force_head": ("linear",),
    }
    atom_energy_module = "energy_block"
    shape_keys = (
        "max_num_elements", "sphere_channels", "lmax", "mmax", "grid_resolution", "cutoff", "edge_channels",
        "distance_function", "num_distance_basis", "hidden_channels", "norm_type", "act_type", "mlp_type",
        "use_envelope",
    )
    block_patterns = (BlockPattern.of("blocks"),)
    readout_input = "norm"  # the final norm: its output (|V|, (lmax+1)^2, sphere_channels) feeds every head
    parameter_rules = (
        (r"sphere_embedding\.", "embedding"),
        (r"(source_embedding|target_embedding|edge_degree_embedding|norm|energy_block|linear)\.", "shared"),
    )
    distill_config = "s2ef/esen_distill_base.yml"
    demo_finetune_config = "finetune/demo_ethanol_esen_base.yml"
    finetune_recipe = "finetune/esen_recipe.yml"

    def forces_are_gradients(self, model) -> bool:
        """True for a hydra model with an ``esen_mlp_efs_head`` predicting forces; a backbone alone:
        the base rule (``regress_forces`` and not ``direct_forces``, which that head sets)."""
        heads = self._heads(model)
        if not heads:
            return super().forces_are_gradients(model)
        return any(type(head).__name__ in _GRADIENT_HEADS and head.regress_forces for head in heads)

    @contextlib.contextmanager
    def differentiable_forces(self, model):
        """The gradient heads in training mode meanwhile: they differentiate the energy with
        ``create_graph`` only in training. eSEN has no dropout, so the outputs do not change."""
        heads = [head for head in self._heads(model) if type(head).__name__ in _GRADIENT_HEADS]
        modes = [head.training for head in heads]
        for head in heads:
            head.train()
        try:
            yield
        finally:
            for head, mode in zip(heads, modes):
                head.train(mode)

    @contextlib.contextmanager
    def block_taps(self, model):
        """The base's taps (each block's output, one ``energy`` branch) with differentiable forces: a
        loss on the gradient heads' forces must reach the blocks."""
        with self.differentiable_forces(model), super().block_taps(model) as taps:
            yield taps

    @staticmethod
    def _heads(model) -> list:
        heads = getattr(getattr(model, "module", model), "output_heads", None)
        return list(heads.values()) if heads is not None else []

    def feature_widths(self, model) -> dict:
        core = core_of(model)
        return {"node embedding": (core.sphere_channels, core.lmax, core.mmax)}


ADAPTER = ESEN()
