import pytest
import torch

from fairchem_prune.errors import PruneError
from fairchem_prune.architectures.gemnet_oc import ADAPTER, slice_first_mlp_weight


def test_first_mlp_columns_follow_the_kept_partitions():
    d, b = 3, 4  # 4 blocks + embedding = 5 partitions of width 3
    weight = torch.arange(2 * d * (b + 1), dtype=torch.float32).reshape(2, d * (b + 1))
    sliced = slice_first_mlp_weight(weight, b, [0, 2])
    # partitions 0 (embedding), 1 (block 0), 3 (block 2)
    expected = torch.cat([weight[:, 0:3], weight[:, 3:6], weight[:, 9:12]], dim=1)
    assert torch.equal(sliced, expected)


def test_state_dict_keys_are_renumbered_in_any_key_space():
    state = {
        "backbone.int_blocks.0.w": torch.tensor(0.0),
        "backbone.int_blocks.1.w": torch.tensor(1.0),
        "backbone.int_blocks.2.w": torch.tensor(2.0),
        "backbone.out_blocks.0.w": torch.tensor(10.0),
        "backbone.out_blocks.1.w": torch.tensor(11.0),
        "backbone.out_blocks.2.w": torch.tensor(12.0),
        "backbone.out_blocks.3.w": torch.tensor(13.0),
        "output_heads.energy.out_mlp_E.0.linear.weight": torch.ones(2, 8),
        "output_heads.energy.out_mlp_E.1.dense_mlp.0.linear.weight": torch.ones(2, 2),
        "backbone.atom_emb.embeddings.weight": torch.ones(3, 2),
    }
    sliced = ADAPTER.slice_state_dict(state, 3, [0, 2])
    assert sliced["backbone.int_blocks.0.w"] == 0.0
    assert sliced["backbone.int_blocks.1.w"] == 2.0
    assert "backbone.int_blocks.2.w" not in sliced
    assert [sliced[f"backbone.out_blocks.{i}.w"].item() for i in range(3)] == [10.0, 11.0, 13.0]
    assert "backbone.out_blocks.3.w" not in sliced
    assert sliced["output_heads.energy.out_mlp_E.0.linear.weight"].shape == (2, 6)
    assert sliced["output_heads.energy.out_mlp_E.1.dense_mlp.0.linear.weight"].shape == (2, 2)
    random = ADAPTER.slice_state_dict(state, 3, [0, 2], mlp_init="random")
    assert "output_heads.energy.out_mlp_E.0.linear.weight" not in random


def test_mismatched_first_layer_is_an_error():
    with pytest.raises(PruneError, match="not a multiple of 4 partitions"):
        slice_first_mlp_weight(torch.ones(2, 10), 3, [0])
