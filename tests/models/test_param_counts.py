"""Parameter counts of JMP-L (configs/models/jmp_l.yml) reduced to 6..2 blocks (paper Table 2), and of
EquiformerV2 31M (configs/models/equiformer_v2_31m.yml)."""

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


EQV2_31M = yaml.safe_load((Path(__file__).parents[2] / "configs" / "models" / "equiformer_v2_31m.yml").read_text())["model"]


def test_equiformer_v2_31m_counts_31m_and_its_reduction_a_stock_model_with_fewer_layers():
    assert count_config_parameters(EQV2_31M) == 31_058_690
    reduced = count_config_parameters({**EQV2_31M, "name": "equiformer_v2_reduced", "num_blocks_kept": 6})
    assert reduced == count_config_parameters({**EQV2_31M, "num_layers": 6}) < 31_058_690
