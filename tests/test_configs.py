"""Every config in configs/ loads through fairchem's own loader; the fine-tuning configs are one per
task and block count and differ only in the blocks kept."""

from pathlib import Path

import fairchem.core.trainers  # noqa: F401  (registers the stock trainers, as `fairchem` does)
import pytest
from fairchem.core.common.registry import registry
from fairchem.core.common.utils import load_config

CONFIGS = Path(__file__).parents[1] / "configs"
TASKS = ("rmd17_aspirin", "qm9_u0", "spice_aa", "md22_acala3", "qmof_bandgap")
BLOCKS = (6, 5, 4, 3, 2)


def load(path):
    config, _, duplicates = load_config(path)
    assert duplicates == [], f"{path}: keys defined by two includes: {duplicates}"
    return config


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_with_fairchem(path):
    config = load(path)
    if "model" in config and "name" in config["model"]:
        assert registry.get_model_class(config["model"]["name"]) is not None
    if "trainer" in config:
        assert registry.get_trainer_class(config["trainer"]) is not None


@pytest.mark.parametrize("task", TASKS)
def test_per_block_configs_differ_only_in_blocks(task):
    configs = {k: load(CONFIGS / "finetune" / f"{task}_{k}b.yml") for k in BLOCKS}
    assert all(configs[k]["model"].pop("num_blocks_kept") == k for k in BLOCKS)
    assert all(configs[k] == configs[6] for k in BLOCKS)
    config = configs[6]
    assert config["trainer"] == "finetune" and config["model"]["name"] == "gemnet_oc_reduced"
    optim = config["optim"]
    assert optim["optimizer"] == "AdamW" and optim["optimizer_params"] == {"betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
    assert optim["scheduler"] == "WarmupCosine" and optim["ema_decay"] == 0.99 and optim["clip_grad_norm"] > 0
    assert len(optim["layerwise_lr"]["blocks"]) == 6
    energy_only = task in ("qm9_u0", "qmof_bandgap")
    assert set(config["outputs"]) == ({"energy"} if energy_only else {"energy", "forces"})
    assert config["model"]["regress_forces"] is not energy_only
    assert {split: config["dataset"][split]["src"] for split in ("train", "val", "test")} == \
        {split: f"data/{task}/{split}" for split in ("train", "val", "test")}
