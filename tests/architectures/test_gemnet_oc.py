"""GemNet-OC (monolithic ``gemnet_oc`` and hydra ``gemnet_oc_backbone``) against the conformance suite;
architecture-specific tests are in tests/models/test_gemnet_oc_reduced.py."""

import torch
from conftest import build_stock, hand_copy_gemnet, hydra_config, rel_err, tiny_config, write_checkpoint
from conformance import ConformanceTests, outputs, two_structures
from fairchem.core.common.registry import registry

from fairchem_prune.architectures.gemnet_oc import ADAPTER

D_ATOM, D_EDGE = 16, 24  # emb_size_atom, emb_size_edge of TINY_GEMNET


class TestGemNetOC(ConformanceTests):
    """The tiny 5-block monolithic ``gemnet_oc`` (every interaction type, direct forces)."""

    architecture = ADAPTER
    contradiction = ("emb_size_atom", 32)
    distill_overrides = ["--model.num_blocks_kept=5"]

    def stock_config(self):
        return {"name": "gemnet_oc", **tiny_config()}

    def hand_built(self, source, kept):
        torch.manual_seed(1)
        target = registry.get_model_class("gemnet_oc")(**tiny_config(num_blocks=len(kept))).eval()
        hand_copy_gemnet(source, target, kept, d_atom=D_ATOM, d_edge=D_EDGE)
        return target


class TestGemNetOCHydra(ConformanceTests):
    """The same model as a hydra ``gemnet_oc_backbone`` with the energy and direct-force heads."""

    architecture = ADAPTER
    contradiction = ("emb_size_edge", 32)
    distill_overrides = ["--model.backbone.num_blocks_kept=5"]

    def stock_config(self):
        # flat outputs: fairchem's predict (OCPCalculator) needs them, or a ``property`` in each output
        return {**hydra_config(), "pass_through_head_outputs": True}

    def hand_built(self, source, kept):
        torch.manual_seed(1)
        config = {**hydra_config(num_blocks=len(kept)), "pass_through_head_outputs": True}
        config.pop("name")
        target = registry.get_model_class("hydra")(**config).eval()
        heads = lambda model: {"E": model.output_heads["energy"], "F": model.output_heads["forces"]}  # noqa: E731
        hand_copy_gemnet(source.backbone, target.backbone, kept, d_atom=D_ATOM, d_edge=D_EDGE,
                         heads_source=heads(source), heads_target=heads(target))
        return target


def test_monolithic_reduced_model_from_a_hydra_checkpoint(tmp_path):
    """``gemnet_oc_reduced`` initialised from a hydra checkpoint (outputs nested by head) takes the heads'
    FinalMLPs and output layers."""
    config = hydra_config()
    stock = build_stock(config)
    write_checkpoint(tmp_path / "hydra.pt", stock, config)
    reduced = registry.get_model_class("gemnet_oc_reduced")(pretrained_checkpoint=str(tmp_path / "hydra.pt")).eval()
    got, ref = outputs(reduced, two_structures()), outputs(stock, two_structures())
    for prop in ("energy", "forces"):
        assert rel_err(got[prop], ref[prop]) <= 1e-6, prop
    assert ref["forces"].abs().max() > 1e-3
