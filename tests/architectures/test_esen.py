"""eSEN (hydra ``esen_backbone`` with the conservative ``esen_mlp_efs_head``: energy, forces and stress)
against the conformance suite, and eSEN-30M-OAM's parameter count.

eSEN draws a random roll of each edge frame in every pass (``init_edge_rot_mat``); the suite seeds every
pass. Its forward pass replaces ``data["pos"]`` / ``data["cell"]`` of the batch (stress by a
displacement), so each model gets a batch of its own.
"""

from pathlib import Path

import torch
import yaml
from conformance import ConformanceTests
from fairchem.core.common.registry import registry

from fairchem_prune.architectures.esen import ADAPTER

CONFIGS = Path(__file__).parents[2] / "configs" / "models"


def tiny_hydra(**changes) -> dict:
    """configs/models/esen_tiny.yml: a 4-block eSEN (lmax 2, 8 channels, 28,209 parameters)."""
    config = yaml.safe_load((CONFIGS / "esen_tiny.yml").read_text())["model"]
    config["backbone"].update(changes)
    return config


class TestESEN(ConformanceTests):
    """The tiny 4-block eSEN with the energy / force / stress head."""

    architecture = ADAPTER
    properties = ("energy", "forces", "stress")
    contradiction = ("sphere_channels", 16)
    equivariance_tolerance = 5e-5      # measured: <= 5.6e-6 of max |F| (float32, random edge frames)
    distill_overrides = ["--model.backbone.num_blocks_kept=4"]
    #: the keep-all student (training mode) against the teacher (eval mode): the head differentiates with
    #: create_graph=self.training, whose backward differs at float32 round-off (measured: forces 2.4e-6
    #: of mean |F|, energy 5e-8, node embedding 2e-7); for the suite's distillation test once it reads it
    distill_tolerance = 1e-5

    def stock_config(self):
        return tiny_hydra()

    def hand_built(self, source, kept):
        torch.manual_seed(1)
        config = tiny_hydra(num_layers=len(kept))
        config.pop("name")
        target = registry.get_model_class("hydra")(**config).eval()
        for name, child in target.backbone.named_children():
            if name == "blocks":
                for j, k in enumerate(kept):
                    child[j].load_state_dict(source.backbone.blocks[k].state_dict())
            else:
                child.load_state_dict(getattr(source.backbone, name).state_dict())
        target.output_heads.load_state_dict(source.output_heads.state_dict())
        return target


#: eSEN-30M-OAM's model_params (matbench-discovery models/eSEN/eSEN-30m-oam.yml)
ESEN_30M_OAM_PARAMETERS = 30_161_153


def test_esen_30m_oam_parameter_count():
    """configs/models/esen_30m_oam.yml has eSEN-30M-OAM's published parameter count, and a reduced
    backbone keeping k of its 10 blocks counts what a stock 10 -> k layer eSEN counts."""
    import fairchem_prune.models.esen_reduced  # noqa: F401  (registers esen_backbone, hydra and ours)
    from fairchem_prune.params import count_config_parameters, count_parameters

    model = yaml.safe_load((CONFIGS / "esen_30m_oam.yml").read_text())["model"]
    assert count_config_parameters(model) == ESEN_30M_OAM_PARAMETERS
    backbone = {k: v for k, v in model["backbone"].items() if k != "model"}
    stock = registry.get_model_class("esen_backbone")
    reduced = registry.get_model_class("esen_reduced_backbone")
    heads = ESEN_30M_OAM_PARAMETERS - count_parameters(stock(**backbone))
    assert heads == 33_153  # the energy MLP: 128 -> 128 -> 128 -> 1
    for k in (3, 7):
        ours = reduced(**backbone, num_blocks_kept=k)
        assert ours.kept_blocks == list(range(k))
        assert count_parameters(ours) == count_parameters(stock(**{**backbone, "num_layers": k}))
