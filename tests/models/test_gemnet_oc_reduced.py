"""gemnet_oc_reduced against stock fairchem GemNet-OC: what only GemNet-OC has (Random MLP, the FinalMLP
features, JMP's options, the direct-force branch). Keeping all / some blocks, EMA, symmetry, slicing,
relevance, distillation and layer-wise learning rates: tests/architectures/test_gemnet_oc.py."""

import pytest
import torch
from conftest import (
    build_stock, energy_forces, hydra_config, molecule_atoms, rel_err, slab_atoms, tiny_config, to_batch,
    write_checkpoint,
)
from fairchem.core.common.registry import registry
from fairchem.core.models.gemnet_oc.gemnet_oc import GemNetOC

from fairchem_prune.errors import PruneError
from fairchem_prune.architectures.gemnet_oc import capture_final_mlp_features

Reduced = registry.get_model_class("gemnet_oc_reduced")


def test_random_mlp_init_replaces_only_the_first_final_mlp_layer(stock_checkpoint):
    path, stock, _ = stock_checkpoint
    sliced = Reduced(pretrained_checkpoint=str(path), num_blocks_kept=3, mlp_init="sliced")
    torch.manual_seed(123)
    random = Reduced(pretrained_checkpoint=str(path), num_blocks_kept=3, mlp_init="random")
    a, b = sliced.state_dict(), random.state_dict()
    differing = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert differing == ["out_mlp_E.0.linear.weight", "out_mlp_F.0.linear.weight"]
    assert a["out_mlp_E.0.linear.weight"].shape == (16, 16 * 4)


def test_config_contradicting_the_checkpoint_is_an_error(stock_checkpoint):
    path, _, _ = stock_checkpoint
    with pytest.raises(PruneError, match="emb_size_atom=32 but pretrained_checkpoint .* emb_size_atom=16"):
        Reduced(pretrained_checkpoint=str(path), emb_size_atom=32)
    with pytest.raises(PruneError, match="num_blocks=6 but pretrained_checkpoint .* has 5"):
        Reduced(pretrained_checkpoint=str(path), num_blocks=6)
    # repeating the checkpoint's value, or changing what the weights do not fix, is fine
    model = Reduced(pretrained_checkpoint=str(path), emb_size_atom=16, cutoff=4.0, max_neighbors=10,
                    regress_forces=False, num_blocks_kept=2)
    assert model.cutoff == 4.0 and model.max_neighbors == 10 and not model.regress_forces


def test_missing_pretrained_checkpoint_is_an_error(tmp_path):
    with pytest.raises(PruneError, match="no such file"):
        Reduced(pretrained_checkpoint=str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("hydra", [False, True])
def test_final_mlp_features_are_exposed(tmp_path, batch, hydra):
    config = hydra_config() if hydra else {"name": "gemnet_oc", **tiny_config()}
    write_checkpoint(tmp_path / "m.pt", build_stock(config), config)
    if hydra:
        from fairchem_prune.slicing import slice_checkpoint
        from fairchem.core.common.utils import load_model_and_weights_from_checkpoint

        slice_checkpoint(tmp_path / "m.pt", tmp_path / "r.pt", num_blocks_kept=3)
        model = load_model_and_weights_from_checkpoint(str(tmp_path / "r.pt")).eval()
    else:
        model = Reduced(pretrained_checkpoint=str(tmp_path / "m.pt"), num_blocks_kept=3).eval()
    with capture_final_mlp_features(model) as features:
        out = model(batch)
    n_atoms = batch.natoms.sum().item()
    assert features.num_partitions == 4
    assert features.node_input.shape == (n_atoms, 16 * 4)
    assert [f.shape for f in features.node_blocks()] == [(n_atoms, 16)] * 4
    assert features.edge_input.shape[1] == 24 * 4 and len(features.edge_blocks()) == 4
    assert len(features.node_layers) == 2 and len(features.edge_layers) == 2
    # the recorded tensors are in the graph: dE/df exists and is non-zero
    energy = out["energy"]["energy"] if hydra else out["energy"]
    (grad,) = torch.autograd.grad(energy.sum(), features.node_input, retain_graph=True)
    assert grad.abs().sum() > 0
    # hooks are gone after the context: another structure leaves the recorded features alone
    model(to_batch([molecule_atoms()]))
    assert features.node_input.shape == (n_atoms, 64)


# ---------------------------------------------------------------------------------------------------------
# JMP's behaviours as options (what a converted JMP checkpoint uses; its outputs: tests/test_jmp.py)


def test_absolute_rbf_cutoff_scales_every_radial_basis_and_keeps_the_graph(batch):
    from fairchem.core.models.gemnet_oc.layers.radial_basis import RadialBasis

    config = tiny_config(cutoff=5.0, cutoff_qint=5.0, cutoff_aeaint=5.0, cutoff_aint=5.0)
    torch.manual_seed(0)
    stock = GemNetOC(**config).eval()
    same = Reduced(**config, absolute_rbf_cutoff=5.0).eval()
    other = Reduced(**config, absolute_rbf_cutoff=12.0).eval()
    for model in (same, other):
        model.load_state_dict(stock.state_dict())
    assert {m.inv_cutoff for m in other.modules() if isinstance(m, RadialBasis)} == {1 / 12.0}
    assert (other.cutoff, other.cutoff_aint) == (5.0, 5.0)  # the graphs keep their cutoffs
    e_ref, f_ref = energy_forces(stock, batch)
    e, f = energy_forces(same, batch)
    assert torch.equal(e, e_ref) and torch.equal(f, f_ref)  # equal to fairchem's when the scales agree
    assert rel_err(energy_forces(other, batch)[0], e_ref) > 1e-2


def test_jmp_cell_offset_sign_changes_only_periodic_graphs():
    torch.manual_seed(0)
    fairchem_sign = Reduced(**tiny_config()).eval()
    jmp_sign = Reduced(**tiny_config(), cell_offset_convention="jmp").eval()
    jmp_sign.load_state_dict(fairchem_sign.state_dict())
    molecule = to_batch([molecule_atoms()])
    assert torch.equal(energy_forces(fairchem_sign, molecule)[1], energy_forces(jmp_sign, molecule)[1])
    graph = {}
    for name, model in (("fairchem", fairchem_sign), ("jmp", jmp_sign)):
        graph[name] = model.generate_graph_dict(to_batch([slab_atoms()]), 5.0, 20)["cell_offset"]
    assert torch.equal(graph["jmp"], -graph["fairchem"]) and graph["jmp"].abs().sum() > 0


def test_mlp_head_has_jmps_layout():
    from fairchem_prune.models.gemnet_oc_reduced import mlp_head

    head = mlp_head(16, 5)
    keys = list(head.state_dict())
    assert keys == [f"{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")] + ["8.weight"]
    assert head(torch.randn(7, 16)).shape == (7, 1) and head[8].out_features == 1
    model = Reduced(**tiny_config(), num_mlps=5)
    assert isinstance(model.out_energy, torch.nn.Sequential) and model.out_forces[8].in_features == 24
    assert model.resolved_config["num_mlps"] == 5
    assert "num_mlps" not in Reduced(**tiny_config()).resolved_config  # fairchem's defaults are not written


def test_fresh_head_keeps_the_pretrained_rest_and_may_change_num_mlps(stock_checkpoint):
    path, stock, _ = stock_checkpoint
    with pytest.raises(PruneError, match="num_mlps=5 but pretrained_checkpoint .* was trained with num_mlps=1"):
        Reduced(pretrained_checkpoint=str(path), num_mlps=5)
    torch.manual_seed(3)
    fresh = Reduced(pretrained_checkpoint=str(path), num_mlps=5, head_init="fresh")
    pretrained, own = stock.state_dict(), fresh.state_dict()
    assert all(torch.equal(own[k], v) for k, v in pretrained.items() if not k.startswith(("out_energy", "out_forces")))
    assert [k for k in own if k.startswith("out_energy.")][-1] == "out_energy.8.weight"
    same_shape = Reduced(pretrained_checkpoint=str(path), head_init="fresh").state_dict()
    assert not torch.equal(same_shape["out_energy.linear.weight"], pretrained["out_energy.linear.weight"])


def test_jmp_activation_name_is_fairchems_silu(stock_checkpoint, batch):
    path, stock, _ = stock_checkpoint
    jmp_named = Reduced(pretrained_checkpoint=str(path), activation="scaled_silu").eval()
    e_ref, _ = energy_forces(stock, batch)
    assert torch.equal(energy_forces(jmp_named, batch)[0], e_ref)


def test_data_without_quadruplet_tags_is_a_clear_error():
    model = Reduced(**tiny_config(qint_tags=[1, 2])).eval()
    molecule = to_batch([molecule_atoms()])  # tags 0
    with pytest.raises(PruneError, match=r"the structures have atom tags \[0\] but the model's quadruplet interactions "
                                         r"need atoms tagged qint_tags \[1, 2\]"):
        model(molecule)
    molecule.tags[:] = 2  # JMP's molecules
    assert torch.isfinite(model(molecule)["energy"]).all()


@pytest.mark.parametrize("option, message", [
    ({"absolute_rbf_cutoff": -1.0}, "absolute_rbf_cutoff must be a positive distance"),
    ({"cell_offset_convention": "ase"}, "cell_offset_convention must be one of"),
    ({"num_mlps": 0}, "num_mlps must be a positive number"),
    ({"head_init": "zero"}, "head_init must be one of"),
    ({"untagged_tag": -1}, "untagged_tag must be an atom tag"),
])
def test_bad_jmp_option_is_an_error(option, message):
    with pytest.raises(PruneError, match=message):
        Reduced(**tiny_config(), **option)


@pytest.mark.parametrize("change, message", [
    ({"max_neighbors": 50}, r"^model max_neighbors=50 > max_neighbors_aint=30: GemNet-OC takes its other graphs "
                            r"out of the atom-interaction graph, which must be the largest; set max_neighbors_aint "
                            r"to at least 50 or lower max_neighbors$"),
    ({"cutoff_qint": 7.0, "cutoff_aeaint": 6.5},
     r"^model cutoff_qint=7.0, cutoff_aeaint=6.5 > cutoff_aint=6.0: .* set cutoff_aint to at least 7.0 or lower "
     r"cutoff_qint and cutoff_aeaint$"),
])
def test_an_atom_interaction_graph_smaller_than_another_is_one_line(change, message):
    """fairchem's own check is a bare AssertionError; without atom interactions fairchem sizes that graph itself."""
    with pytest.raises(PruneError, match=message):
        Reduced(**tiny_config(**change))
    assert Reduced(**tiny_config(**change, atom_interaction=False)).max_neighbors_aint >= 20


def test_hydra_backbone_refuses_the_mlp_head():
    with pytest.raises(PruneError, match="num_mlps > 1 .* applies to the monolithic gemnet_oc_reduced"):
        registry.get_model_class("gemnet_oc_reduced_backbone")(**tiny_config(), num_mlps=5)
