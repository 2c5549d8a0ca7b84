"""tools/slice_checkpoint.py on EquiformerV2 checkpoints (monolithic and hydra)."""

import copy

import pytest
import torch
from conftest import TINY_EQV2, TINY_EQV2_HEADS, build_perturbed as build_stock, energy_forces, molecule_atoms, slab_atoms, to_batch, write_checkpoint
from fairchem.core.common.registry import registry

import fairchem_prune.models.equiformer_v2_reduced  # noqa: F401  (imports and registers fairchem's EquiformerV2)
from fairchem_prune.cli import tool_main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def monolithic_checkpoint(tmp_path):
    config = {"name": "equiformer_v2", **TINY_EQV2}
    model = build_stock(config)
    write_checkpoint(tmp_path / "eqv2.pt", model, config)
    return tmp_path / "eqv2.pt", model


def test_monolithic_slice_loads_with_ocp_calculator(monolithic_checkpoint, tmp_path, capsys):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    path, _ = monolithic_checkpoint
    out = tmp_path / "k2.pt"
    assert tool_main("slice", ["--checkpoint", str(path), "--kept-blocks", "0,2", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(4 transformer blocks, state_dict weights)" in printed and "kept blocks [0, 2]" in printed
    assert "FinalMLP" not in printed and "parameters  " in printed
    checkpoint = torch.load(out, weights_only=False)
    model_config = checkpoint["config"]["model"]
    assert model_config["name"] == "equiformer_v2_reduced" and model_config["num_layers"] == 2
    assert model_config["source_blocks"] == [0, 2] and "pretrained_checkpoint" not in model_config
    assert "kept_blocks" not in model_config and "optimizer" not in checkpoint and "ema" not in checkpoint
    assert checkpoint["fairchem_prune"]["mlp_init"] is None

    atoms = slab_atoms()
    atoms.calc = OCPCalculator(checkpoint_path=str(out), cpu=True)
    torch.manual_seed(1)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    reduced = registry.get_model_class("equiformer_v2_reduced")(pretrained_checkpoint=str(path), kept_blocks=[0, 2])
    expected_energy, expected_forces = energy_forces(reduced.eval(), to_batch([slab_atoms()]))
    assert energy == pytest.approx(expected_energy.item(), rel=1e-5)
    assert forces == pytest.approx(expected_forces.numpy(), rel=1e-4, abs=1e-5)
    assert abs(forces).max() > 1e-2

    # a sliced checkpoint slices again: block 1 of it is block 2 of the original
    again = tmp_path / "k1.pt"
    assert tool_main("slice", ["--checkpoint", str(out), "--kept-blocks", "1", "--output", str(again)]) == 0
    assert torch.load(again, weights_only=False)["config"]["model"]["source_blocks"] == [2]


def test_hydra_slice_equals_hand_built_stock_hydra(tmp_path):
    from fairchem.core.common.utils import load_model_and_weights_from_checkpoint
    from fairchem.core.models.base import HydraModel

    config = {"name": "hydra", "backbone": {"model": "equiformer_v2_backbone", **TINY_EQV2},
              "heads": copy.deepcopy(TINY_EQV2_HEADS), "otf_graph": True}
    stock = build_stock(config)
    torch.manual_seed(5)
    ema = [p.detach() + 0.05 * torch.randn_like(p) for p in stock.parameters() if p.requires_grad]
    write_checkpoint(tmp_path / "hydra.pt", stock, config, ema_params=ema)
    with torch.no_grad():  # what the slice must start from: the EMA weights
        for p, e in zip([p for p in stock.parameters() if p.requires_grad], ema):
            p.copy_(e)
    argv = ["--checkpoint", str(tmp_path / "hydra.pt"), "--kept-blocks", "0,2", "--output", str(tmp_path / "h.pt")]
    assert tool_main("slice", argv) == 0
    reduced = load_model_and_weights_from_checkpoint(str(tmp_path / "h.pt")).eval()
    assert type(reduced.backbone).__name__ == "EquiformerV2ReducedBackbone"

    target = HydraModel(backbone={"model": "equiformer_v2_backbone", **TINY_EQV2, "num_layers": 2},
                        heads=copy.deepcopy(TINY_EQV2_HEADS)).eval()
    for name, child in target.backbone.named_children():
        if name == "blocks":
            for j, k in enumerate([0, 2]):
                child[j].load_state_dict(stock.backbone.blocks[k].state_dict())
        else:
            child.load_state_dict(getattr(stock.backbone, name).state_dict())
    target.output_heads.load_state_dict(stock.output_heads.state_dict())
    batch = to_batch([molecule_atoms(), slab_atoms()])
    (e, f), (e_ref, f_ref) = energy_forces(reduced, batch), energy_forces(target, batch)
    assert torch.equal(e, e_ref) and torch.equal(f, f_ref)


def write_other_hydra(path):
    config = {"name": "hydra", "backbone": {"model": "schnet_backbone"}, "heads": {}}
    torch.save({"config": {"model": config}, "state_dict": {}}, path)


def write_other_model(path):
    torch.save({"config": {"model": {"name": "schnet", "hidden_channels": 8}}, "state_dict": {}}, path)


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("too many blocks", ["--num-blocks-kept", "5"], "cannot keep 5 blocks: the source model has 4"),
        ("unsorted", ["--kept-blocks", "2,0"], "not in increasing order"),
        ("missing block", ["--kept-blocks", "0,4"], "block(s) [4] do not exist"),
        ("random mlp", ["--num-blocks-kept", "2", "--mlp-init", "random"],
         "mlp_init='random': EquiformerV2 has no first readout layer to re-initialise"),
        ("other model", ["--num-blocks-kept", "2", "--checkpoint", "{tmp}/schnet.pt"],
         "holds a 'schnet' model; fairchem-prune reduces EquiformerV2 (equiformer_v2, equiformer_v2_reduced, hydra "
         "with a equiformer_v2_backbone / equiformer_v2_reduced_backbone backbone)"),
        ("other hydra", ["--num-blocks-kept", "2", "--checkpoint", "{tmp}/schnet_hydra.pt"],
         "holds a hydra model with a 'schnet_backbone' backbone; fairchem-prune reduces"),
    ],
)
def test_bad_input_gives_one_clear_line_and_changes_nothing(monolithic_checkpoint, tmp_path, capsys, case, args,
                                                            message):
    path, _ = monolithic_checkpoint
    write_other_model(tmp_path / "schnet.pt")
    write_other_hydra(tmp_path / "schnet_hydra.pt")
    args = [a.format(tmp=tmp_path) for a in args]
    argv = ([] if "--checkpoint" in args else ["--checkpoint", str(path)]) + args + ["--output", str(tmp_path / "o.pt")]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert tool_main("slice", argv) == 2, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
