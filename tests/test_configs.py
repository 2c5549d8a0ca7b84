"""Every config in configs/ loads through fairchem's own loader; the fine-tuning configs are one per
task and block count and differ only in the blocks kept; the EquiformerV2 configs differ from the
GemNet-OC ones only in the model (and, for distillation, the edge-to-edge term)."""

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


@pytest.fixture(scope="module")
def eqv2_checkpoint(tmp_path_factory):
    """A random 8-block EquiformerV2 checkpoint: a stand-in for EquiformerV2 31M."""
    from conftest import TINY_EQV2, build_perturbed, write_checkpoint

    import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (registers fairchem's equiformer_v2)

    config = {"name": "equiformer_v2", **TINY_EQV2, "num_layers": 8}
    path = tmp_path_factory.mktemp("eqv2") / "eqv2_8b.pt"
    write_checkpoint(path, build_perturbed(config), config)
    return path


@pytest.mark.parametrize("task", TASKS)
def test_equiformer_v2_config_is_the_task_with_another_model(task, eqv2_checkpoint):
    eqv2, gemnet = load(CONFIGS / "finetune" / f"{task}_eqv2_6b.yml"), load(CONFIGS / "finetune" / f"{task}_6b.yml")
    model, gemnet_model = eqv2.pop("model"), gemnet.pop("model")
    assert eqv2 == gemnet  # data, targets, losses, metrics and the fine-tuning recipe
    assert model["name"] == "equiformer_v2_reduced" and model["num_blocks_kept"] == 6
    assert all(model[key] == gemnet_model[key] for key in ("regress_forces", "use_pbc", "otf_graph"))
    # the model section builds the model (a tiny 8-block checkpoint in place of EquiformerV2 31M)
    kwargs = {**model, "pretrained_checkpoint": str(eqv2_checkpoint)}
    built = registry.get_model_class(kwargs.pop("name"))(**kwargs)
    assert len(built.blocks) == 6 and built.regress_forces is model["regress_forces"]


def test_equiformer_v2_distill_configs_are_the_gemnet_set_up_without_the_edge_term():
    configs = {k: load(CONFIGS / "s2ef" / f"eqv2_distill_{k}b.yml") for k in (7, 6, 5, 4)}
    assert all(configs[k]["model"].pop("num_blocks_kept") == k for k in configs)
    assert all(configs[k] == configs[7] for k in configs)
    eqv2, gemnet = configs[7], load(CONFIGS / "s2ef" / "distill_base.yml")
    assert eqv2["trainer"] == "distill" and eqv2["model"]["name"] == "equiformer_v2_reduced"
    assert eqv2["task"]["distill"].pop("e2e_weight") == 0 and gemnet["task"]["distill"].pop("e2e_weight") > 0
    for config in (eqv2, gemnet):
        config.pop("model")
        config["task"]["distill"].pop("teacher_checkpoint")
    assert eqv2 == gemnet  # the demo mix, the other loss weights, the budget, sampling and optimiser


#: JMP's fine-tuning graph per task: cutoff (Å) and max neighbours (main, qint, aeaint, aint)
JMP_GRAPHS = {"rmd17_aspirin": (7.0, (100, 26, 66, 3333)), "qm9_u0": (8.0, (30, 8, 20, 1000)),
              "spice_aa": (12.0, (30, 8, 20, 1000)), "md22_acala3": (12.0, (30, 8, 20, 1000)),
              "qmof_bandgap": (19.0, (30, 8, 20, 1000))}


@pytest.mark.parametrize("task", TASKS)
def test_finetune_configs_use_jmps_graph_basis_head_and_forces(task):
    model = load(CONFIGS / "finetune" / f"{task}_4b.yml")["model"]
    cutoff, neighbors = JMP_GRAPHS[task]
    assert [model[k] for k in ("cutoff", "cutoff_qint", "cutoff_aeaint", "cutoff_aint")] == [cutoff] * 4
    assert tuple(model[k] for k in ("max_neighbors", "max_neighbors_qint", "max_neighbors_aeaint", "max_neighbors_aint")) == neighbors
    assert model["absolute_rbf_cutoff"] == 12.0 and model["qint_tags"] == [1, 2] and model["cell_offset_convention"] == "jmp"
    assert model["num_mlps"] == 5 and model["head_init"] == "fresh"
    assert model["direct_forces"] is False  # energy only, or forces as energy gradients


@pytest.mark.parametrize("task", TASKS)
def test_jmp_s_configs_are_the_jmp_l_ones_with_another_checkpoint(task):
    for k in (4, 3, 2):
        small, large = load(CONFIGS / "finetune" / "jmp_s" / f"{task}_{k}b.yml"), load(CONFIGS / "finetune" / f"{task}_{k}b.yml")
        assert small["model"].pop("pretrained_checkpoint") == "checkpoints/jmp_s.pt"
        assert large["model"].pop("pretrained_checkpoint") == "checkpoints/jmp_l.pt"
        assert small == large


def test_design_card_example_is_qm9_u0_with_4_blocks():
    assert load(CONFIGS / "finetune" / "qm9_4b.yml") == load(CONFIGS / "finetune" / "qm9_u0_4b.yml")


def test_demo_finetuning_keeps_the_demo_teachers_cutoffs_and_head_on_ethanols_whole_graph():
    model = load(CONFIGS / "finetune" / "demo_ethanol_4b.yml")["model"]
    assert not {"absolute_rbf_cutoff", "num_mlps", "head_init", "qint_tags", "cutoff"} & set(model)
    assert model["max_neighbors"] == model["max_neighbors_aint"] == 8  # every other atom of ethanol (9 atoms)


def test_each_architecture_recipe_trains_its_reduced_model_with_the_finetune_trainer():
    from fairchem_prune.architectures import all_architectures, core_section
    from fairchem_prune.resources import config_path

    for architecture in all_architectures():
        config, _, conflicts = load_config(str(config_path(architecture.finetune_recipe)))
        core = core_section(config["model"])
        assert not conflicts and config["trainer"] == "finetune" and "layerwise_lr" in config["optim"]
        assert core.get("model", core.get("name")) in (architecture.reduced_model, architecture.reduced_backbone)


@pytest.mark.parametrize("task", TASKS)
def test_task_files_are_complete_tasks(task):
    """What `fairchem-prune compress --task` needs: data, targets, losses, metrics in the one file."""
    config, _, conflicts = load_config(str(CONFIGS / "finetune" / "tasks" / f"{task}.yml"))
    assert not conflicts and {"dataset", "outputs", "loss_functions", "evaluation_metrics"} <= set(config)
