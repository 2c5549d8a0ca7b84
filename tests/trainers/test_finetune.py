"""The `finetune` trainer's parts: layer-wise learning rates and the WarmupCosine schedule."""

import math

import pytest
import torch
from conftest import tiny_config

from fairchem_prune.errors import PruneError
from fairchem_prune.models.gemnet_oc_reduced import GemNetOCReduced
from fairchem_prune.trainers.finetune import layerwise_param_groups, warmup_cosine

JMP_L = {"embedding": 0.3, "blocks": [0.55, 0.40, 0.30, 0.40, 0.55, 0.625]}


def expected_scale(name: str) -> float:
    """Independent statement of the documented rule."""
    parts = name.split(".")
    if parts[0] == "atom_emb" or parts[:2] == ["out_blocks", "0"]:
        return 0.3
    if parts[0] == "int_blocks":
        return JMP_L["blocks"][int(parts[1])]
    if parts[0] == "out_blocks":
        return JMP_L["blocks"][int(parts[1]) - 1]
    return 1.0


def test_parameter_groups_get_decayed_learning_rates():
    config = {k: v for k, v in tiny_config(num_blocks=6).items() if k != "num_blocks"}
    model = GemNetOCReduced(num_blocks=6, num_blocks_kept=4, **config)
    no_wd = tuple(model.no_weight_decay())
    groups = layerwise_param_groups(model, 1e-3, 0.1, JMP_L, no_wd)
    group_of = {id(p): g for g in groups for p in g["params"]}
    names = {name: p for name, p in model.named_parameters() if p.requires_grad}  # not the scale factors
    assert len(group_of) == len(names) == sum(len(g["params"]) for g in groups)  # each parameter exactly once
    for name, param in names.items():
        group = group_of[id(param)]
        assert group["lr"] == pytest.approx(1e-3 * expected_scale(name)), name
        assert group["weight_decay"] == (0.0 if name.endswith(no_wd) else 0.1), name
    lrs = {round(g["lr"] / 1e-3, 6) for g in groups}
    assert lrs == {0.3, 0.55, 0.40, 1.0}  # blocks 0..3 kept: 0.55, 0.40, 0.30, 0.40
    assert any(name.startswith("int_blocks.3.") for name in names) and not any("int_blocks.4." in n for n in names)


def test_too_few_multipliers_is_an_error():
    config = {k: v for k, v in tiny_config(num_blocks=6).items() if k != "num_blocks"}
    model = GemNetOCReduced(num_blocks=6, **config)
    with pytest.raises(PruneError, match="layerwise_lr.blocks has 2 entries"):
        layerwise_param_groups(model, 1e-3, 0.1, {"embedding": 0.3, "blocks": [0.5, 0.4]})


def test_warmup_cosine_scales_every_group():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.3}])
    optim = {"warmup_epochs": 2, "warmup_factor": 0.1, "cosine_epochs": 10, "lr_min_factor": 0.1}
    scheduler = warmup_cosine(optimizer, optim, steps_per_epoch=5)  # warm-up 10 steps, cosine to step 50

    def factor(step):  # linear warm-up from 0.1, then cosine (over the whole 50 steps) to 0.1
        if step <= 10:
            return 0.1 + 0.9 * step / 10
        return 0.1 + 0.45 * (1 + math.cos(math.pi * min(step, 50) / 50)) if step < 50 else 0.1

    for step in range(60):
        for group, base in zip(optimizer.param_groups, (1.0, 0.3)):
            assert group["lr"] == pytest.approx(base * factor(step)), step
        optimizer.step()
        scheduler.step()


def test_equiformer_v2_blocks_and_atom_embedding_get_their_multipliers():
    from conftest import TINY_EQV2

    from fairchem_prune.models.equiformer_v2_reduced import EquiformerV2Reduced

    model = EquiformerV2Reduced(**{**TINY_EQV2, "num_layers": 6}, kept_blocks=[0, 2, 5])
    groups = layerwise_param_groups(model, 1e-3, 0.1, JMP_L, tuple(model.no_weight_decay()))
    group_of = {id(p): g for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        parts = name.split(".")
        # the j-th kept block gets the j-th multiplier (as GemNet-OC's k-block models use m_0..m_{k-1})
        expected = 0.3 if parts[0] == "sphere_embedding" else JMP_L["blocks"][int(parts[1])] if parts[0] == "blocks" else 1.0
        assert group_of[id(param)]["lr"] == pytest.approx(1e-3 * expected), name
    assert {round(g["lr"] / 1e-3, 6) for g in groups} == {0.3, 0.55, 0.40, 1.0}  # block 2 shares 0.3 with the embedding
