"""EquiformerV2 (the monolithic ``equiformer_v2`` and hydra ``equiformer_v2_backbone``) against the
conformance suite; architecture-specific tests (float64, block outputs, bad sources) are in
tests/models/test_equiformer_v2_reduced.py."""

import copy

from conftest import TINY_EQV2, TINY_EQV2_HEADS
from conformance import ConformanceTests
from fairchem.core.common.registry import registry

from fairchem_prune.architectures.equiformer_v2 import ADAPTER

#: no dropout: the distill student runs in training mode and must compute what the teacher (eval) does
NO_DROPOUT = {"alpha_drop": 0.0, "drop_path_rate": 0.0}


def copy_blocks(source, target, kept):
    """Copy ``source``'s weights keeping blocks ``kept`` into the stock ``target`` (a monolithic model
    or a backbone), module by module."""
    for name, child in target.named_children():
        if name == "blocks":
            for j, k in enumerate(kept):
                child[j].load_state_dict(source.blocks[k].state_dict())
        else:
            child.load_state_dict(getattr(source, name).state_dict())


class TestEquiformerV2(ConformanceTests):
    """The tiny 4-block monolithic ``equiformer_v2`` (grid_resolution 12: equivariant to ~3e-5)."""

    architecture = ADAPTER
    contradiction = ("sphere_channels", 16)
    distill_overrides = ["--model.num_blocks_kept=4"]

    def stock_config(self):
        return {"name": "equiformer_v2", **copy.deepcopy(TINY_EQV2), **NO_DROPOUT}

    def hand_built(self, source, kept):
        config = self.stock_config()
        config.pop("name")
        target = registry.get_model_class("equiformer_v2")(**{**config, "num_layers": len(kept)}).eval()
        copy_blocks(source, target, kept)
        return target


class TestEquiformerV2Hydra(TestEquiformerV2):
    """The same model as a hydra ``equiformer_v2_backbone`` with the energy and force heads."""

    distill_overrides = ["--model.backbone.num_blocks_kept=4"]

    def stock_config(self):
        return {"name": "hydra", "backbone": {"model": "equiformer_v2_backbone", **copy.deepcopy(TINY_EQV2), **NO_DROPOUT},
                "heads": copy.deepcopy(TINY_EQV2_HEADS), "otf_graph": True,
                "pass_through_head_outputs": True}  # flat outputs: fairchem's predict (OCPCalculator) needs them

    def hand_built(self, source, kept):
        config = self.stock_config()
        config.pop("name")
        config["backbone"]["num_layers"] = len(kept)
        target = registry.get_model_class("hydra")(**config).eval()
        copy_blocks(source.backbone, target.backbone, kept)
        for name, head in target.output_heads.items():
            head.load_state_dict(source.output_heads[name].state_dict())
        return target
