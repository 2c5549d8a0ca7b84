"""Parameter counts of JMP-L (configs/models/jmp_l.yml) reduced to 6..2 blocks (paper Table 2), of JMP-S
(configs/models/jmp_s.yml), and of EquiformerV2 31M (configs/models/equiformer_v2_31m.yml)."""

from pathlib import Path

import pytest
import yaml

from fairchem_prune.params import count_config_parameters

JMP_L = yaml.safe_load((Path(__file__).parents[2] / "configs" / "models" / "jmp_l.yml").read_text())["model"]
#: paper Table 2, millions; includes JMP's ~0.3M task head
PAPER = {6: 160.9, 5: 134.5, 4: 108.2, 3: 81.9, 2: 55.5}


def test_stock_jmp_l_count_matches_fairchem():
    assert count_config_parameters({**JMP_L, "direct_forces": False}) == 160_612_681


@pytest.mark.parametrize("blocks", sorted(PAPER))
def test_reduced_jmp_l_matches_paper_table_2(blocks):
    config = {**JMP_L, "name": "gemnet_oc_reduced", "direct_forces": False, "regress_forces": False,
              "num_blocks_kept": blocks}
    count = count_config_parameters(config) / 1e6
    assert abs(count - PAPER[blocks]) / PAPER[blocks] <= 0.005, f"{blocks} blocks: {count:.2f}M"
    # the reduced model is exactly a stock GemNet-OC with that many blocks
    assert count_config_parameters({**JMP_L, "direct_forces": False, "num_blocks": blocks}) / 1e6 == count


#: JMP's 5-layer output MLP (num_mlps: 5), as a converted JMP checkpoint has it
JMP_HEAD = {"name": "gemnet_oc_reduced", "num_mlps": 5}


@pytest.mark.parametrize("blocks", sorted(PAPER))
def test_jmp_l_with_jmps_energy_head_matches_paper_table_2_within_0_1_percent(blocks):
    config = {**JMP_L, **JMP_HEAD, "direct_forces": False, "regress_forces": False, "num_blocks_kept": blocks}
    count = count_config_parameters(config) / 1e6
    print(f"JMP-L, {blocks} blocks, one 5-layer energy head: {count:.3f}M (paper {PAPER[blocks]}M)")
    assert abs(count - PAPER[blocks]) / PAPER[blocks] <= 0.001, f"{blocks} blocks: {count:.3f}M"


def test_jmp_l_with_force_branch_and_four_pretraining_heads_counts_235m():
    from fairchem_prune.jmp import pretraining_parameter_count

    count = pretraining_parameter_count({**JMP_L, **JMP_HEAD}) / 1e6
    print(f"JMP-L pre-training model (force branch, 4 heads): {count:.2f}M (JMP's README: 235M)")
    assert abs(count - 235.0) / 235.0 <= 0.01


JMP_S = yaml.safe_load((Path(__file__).parents[2] / "configs" / "models" / "jmp_s.yml").read_text())["model"]


@pytest.mark.parametrize("blocks", [4, 3, 2])
def test_jmp_s_rows(blocks):
    """The same rows for JMP-S (4 blocks): no paper figure to compare with; printed for the README."""
    from fairchem_prune.jmp import pretraining_parameter_count

    energy_head = count_config_parameters({**JMP_S, **JMP_HEAD, "direct_forces": False, "regress_forces": False,
                                           "num_blocks_kept": blocks})
    stock = count_config_parameters({**JMP_S, "direct_forces": False, "num_blocks": blocks})
    pretraining = pretraining_parameter_count({**JMP_S, **JMP_HEAD, "num_blocks_kept": blocks})
    print(f"JMP-S, {blocks} blocks: {stock / 1e6:.2f}M stock, {energy_head / 1e6:.2f}M with one 5-layer energy head, "
          f"{pretraining / 1e6:.2f}M with the force branch and 4 heads")
    # JMP's head adds 4 (d x d + d) + d parameters on top of fairchem's bias-free d -> 1 layer
    assert energy_head - stock == 4 * (256 * 256 + 256)
    assert stock < energy_head < pretraining


EQV2_31M = yaml.safe_load((Path(__file__).parents[2] / "configs" / "models" / "equiformer_v2_31m.yml").read_text())["model"]


def test_equiformer_v2_31m_counts_31m_and_its_reduction_a_stock_model_with_fewer_layers():
    assert count_config_parameters(EQV2_31M) == 31_058_690
    reduced = count_config_parameters({**EQV2_31M, "name": "equiformer_v2_reduced", "num_blocks_kept": 6})
    assert reduced == count_config_parameters({**EQV2_31M, "num_layers": 6}) < 31_058_690
