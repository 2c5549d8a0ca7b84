"""PaiNN (monolithic ``painn`` and hydra ``painn_backbone``) against the conformance suite, plus the
parameter counts of the PaiNN configs."""

import copy
from pathlib import Path

import torch
import yaml
from conformance import ConformanceTests
from fairchem.core.common.registry import registry

from fairchem_prune.architectures.painn import ADAPTER, SCALE_PREFIX

#: a 4-block PaiNN with direct forces, small enough to run in milliseconds
TINY_PAINN = dict(
    hidden_channels=16, num_layers=4, num_rbf=8, cutoff=5.0, max_neighbors=20,
    regress_forces=True, direct_forces=True, use_pbc=True, otf_graph=True, num_elements=83,
)
TINY_PAINN_HEADS = {"energy": {"module": "painn_energy_head"}, "forces": {"module": "painn_force_head"}}
CONFIGS = Path(__file__).parents[2] / "configs"


def hand_copy_painn(source: torch.nn.Module, target: torch.nn.Module, kept) -> None:
    """Copy ``source``'s weights keeping blocks ``kept`` into the stock ``target``, module by module:
    message / update layer and scale factor of block kept[j] to block j, every other child by name."""
    for name, child in target.named_children():
        if child is None:
            continue
        if name in ("message_layers", "update_layers"):
            for j, k in enumerate(kept):
                child[j].load_state_dict(getattr(source, name)[k].state_dict())
        elif name.startswith(SCALE_PREFIX):
            j = int(name[len(SCALE_PREFIX):])
            child.load_state_dict(getattr(source, f"{SCALE_PREFIX}{kept[j]}").state_dict())
        else:
            child.load_state_dict(getattr(source, name).state_dict())


class TestPaiNN(ConformanceTests):
    """The tiny 4-block monolithic ``painn`` with direct forces."""

    architecture = ADAPTER
    contradiction = ("hidden_channels", 32)
    equivariance_tolerance = 5e-5  # measured: <= 6.2e-6 (10 rotations, molecule and slab; float32 round-off)
    distill_overrides = ["--model.num_blocks_kept=4"]

    def stock_config(self):
        return {"name": "painn", **copy.deepcopy(TINY_PAINN)}

    def hand_built(self, source, kept):
        torch.manual_seed(1)
        target = registry.get_model_class("painn")(**{**TINY_PAINN, "num_layers": len(kept)}).eval()
        hand_copy_painn(source, target, kept)
        return target


class TestPaiNNHydra(TestPaiNN):
    """The same model as a hydra ``painn_backbone`` with the energy and direct-force heads."""

    contradiction = ("num_rbf", 16)
    distill_overrides = ["--model.backbone.num_blocks_kept=4"]

    def stock_config(self):
        return {"name": "hydra", "backbone": {"model": "painn_backbone", **copy.deepcopy(TINY_PAINN)},
                "heads": copy.deepcopy(TINY_PAINN_HEADS), "pass_through_head_outputs": True, "otf_graph": True}

    def hand_built(self, source, kept):
        torch.manual_seed(1)
        config = self.stock_config()
        config.pop("name")
        config["backbone"]["num_layers"] = len(kept)
        target = registry.get_model_class("hydra")(**config).eval()
        hand_copy_painn(source.backbone, target.backbone, kept)
        target.output_heads.load_state_dict(source.output_heads.state_dict())
        return target


def _count_stock(model_config: dict) -> int:
    config = copy.deepcopy(model_config)
    return sum(p.numel() for p in registry.get_model_class(config.pop("name"))(**config).parameters())


def test_config_parameter_counts_match_the_stock_models():
    """painn_oc20.yml counts what fairchem's ``painn`` of that size has, and a reduced PaiNN keeping k
    of the blocks counts what a stock k-layer PaiNN counts (every block is the same size)."""
    import fairchem_prune.models.painn_reduced  # noqa: F401  (registers fairchem's painn too)
    from fairchem_prune.params import count_config_parameters

    oc20 = yaml.safe_load((CONFIGS / "models" / "painn_oc20.yml").read_text())["model"]
    total = count_config_parameters(oc20)
    assert total == _count_stock(oc20) == 20_073_481  # 6 of them are the blocks' fitted scale factors
    assert count_config_parameters(oc20, trainable_only=True) == total - oc20["num_layers"]
    tiny = yaml.safe_load((CONFIGS / "models" / "painn_tiny.yml").read_text())["model"]
    for kept in ([0, 1, 2], [1, 4], [5]):
        reduced = {**tiny, "name": "painn_reduced", "kept_blocks": kept}
        assert count_config_parameters(reduced) == _count_stock({**tiny, "num_layers": len(kept)}), kept


def _scales(core) -> list[float]:
    return [getattr(core, f"{SCALE_PREFIX}{i}").scale_factor.item() for i in range(core.num_layers)]


def test_scale_factors_come_from_the_checkpoint_or_as_for_a_stock_model(tmp_path):
    """From a checkpoint the kept blocks' scale factors are used (a ``scale_file`` is ignored); from
    scratch a ``scale_file`` fills blocks 0 .. b'-1, as for a stock b'-layer ``painn``."""
    from conftest import write_checkpoint

    suite = TestPaiNN()
    stock, config = suite.build_stock()
    write_checkpoint(tmp_path / "stock.pt", stock, config)
    scale_file = {f"{SCALE_PREFIX}{i}": 2.0 + i for i in range(4)}
    cls = registry.get_model_class("painn_reduced")
    reduced = cls(pretrained_checkpoint=str(tmp_path / "stock.pt"), kept_blocks=[1, 3], scale_file=scale_file)
    assert _scales(reduced) == [_scales(stock)[1], _scales(stock)[3]]
    assert "scale_file" not in reduced.resolved_config
    fresh = cls(**{**TINY_PAINN, "kept_blocks": [1, 3], "scale_file": scale_file})
    stock_2 = registry.get_model_class("painn")(**{**TINY_PAINN, "num_layers": 2, "scale_file": scale_file})
    assert _scales(fresh) == _scales(stock_2) == [2.0, 3.0]


def test_monolithic_reduced_model_from_a_hydra_checkpoint(tmp_path):
    """``painn_reduced`` initialised from a hydra checkpoint takes the heads' readouts."""
    from conftest import write_checkpoint
    from conformance import outputs, rel_err, two_structures

    suite = TestPaiNNHydra()
    stock, config = suite.build_stock()
    write_checkpoint(tmp_path / "hydra.pt", stock, config)
    reduced = registry.get_model_class("painn_reduced")(pretrained_checkpoint=str(tmp_path / "hydra.pt")).eval()
    batch = two_structures()
    got, ref = outputs(reduced, batch), outputs(stock, batch)
    for prop in ("energy", "forces"):
        assert rel_err(got[prop], ref[prop]) <= 1e-6, prop
    assert ref["forces"].abs().max() > 1e-3
