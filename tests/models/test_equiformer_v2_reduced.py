"""equiformer_v2_reduced / equiformer_v2_reduced_backbone against stock fairchem EquiformerV2.

EquiformerV2 rotates every edge into a frame with a random roll about the edge (``torch.rand_like`` in
fairchem's ``init_edge_rot_mat``), so each forward pass here is seeded: equal seeds give equal frames.
It runs in float64 only without PBC (fairchem's ``radius_graph_pbc`` is float32) and with torch's default
dtype set to float64 (its Wigner matrices are made in the default dtype): molecules are compared in
float64 here. What every architecture passes (float32: keeping all / some blocks, EMA, symmetry, slicing,
relevance, distillation, layer-wise learning rates) is in tests/architectures/test_equiformer_v2.py.
"""

import copy
import subprocess
import sys

import pytest
import torch
from conftest import TINY_EQV2, TINY_EQV2_HEADS, build_perturbed as build_stock, energy_forces, molecule_atoms, rel_err, slab_atoms, to_batch, write_checkpoint
from fairchem.core.common.registry import registry
from fairchem.core.models.equiformer_v2.equiformer_v2_deprecated import EquiformerV2

from fairchem_prune.errors import PruneError
from fairchem_prune.architectures.equiformer_v2 import ADAPTER as EQV2

capture_block_outputs = EQV2.capture_block_outputs

Reduced = registry.get_model_class("equiformer_v2_reduced")

def monolithic_config(**changes):
    return {"name": "equiformer_v2", **TINY_EQV2, **changes}


def hydra_config(**changes):
    return {"name": "hydra", "backbone": {"model": "equiformer_v2_backbone", **TINY_EQV2, **changes},
            "heads": copy.deepcopy(TINY_EQV2_HEADS), "otf_graph": True}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def stock_checkpoint(tmp_path):
    """(path, model) of a random stock 4-block ``equiformer_v2`` checkpoint."""
    config = monolithic_config()
    model = build_stock(config)
    write_checkpoint(tmp_path / "eqv2.pt", model, config)
    return tmp_path / "eqv2.pt", model


#: float64 only; float32 (and first-k / subsets, EMA, symmetry, ...): tests/architectures/test_equiformer_v2.py
PRECISIONS = [("molecule", torch.float64)]


def precision_setup(request, structures, dtype):
    """(structure list, config changes) for one precision case; float64 needs the default dtype."""
    if dtype == torch.float64:
        request.getfixturevalue("float64_default")
    atoms = [molecule_atoms()] if structures == "molecule" else [slab_atoms()]
    return atoms, {"use_pbc": structures == "slab"}


@pytest.mark.parametrize("structures, dtype", PRECISIONS)
def test_keeping_all_blocks_reproduces_stock_monolithic(request, tmp_path, structures, dtype):
    atoms, changes = precision_setup(request, structures, dtype)
    config = monolithic_config(**changes)
    stock = build_stock(config)
    write_checkpoint(tmp_path / "m.pt", stock, config)
    batch = to_batch(atoms, dtype)
    e_ref, f_ref = energy_forces(stock, batch)
    e, f = energy_forces(Reduced(pretrained_checkpoint=str(tmp_path / "m.pt")).eval(), batch)
    assert e.dtype == f.dtype == dtype
    assert rel_err(e, e_ref) <= 1e-5 and rel_err(f, f_ref) <= 1e-5
    assert f_ref.abs().max() > 1e-3  # a non-trivial reference


@pytest.mark.parametrize("structures, dtype", PRECISIONS)
def test_keeping_all_blocks_reproduces_stock_hydra(request, tmp_path, structures, dtype):
    from fairchem.core.common.utils import load_model_and_weights_from_checkpoint

    from fairchem_prune.slicing import slice_checkpoint

    atoms, changes = precision_setup(request, structures, dtype)
    config = hydra_config(**changes)
    stock = build_stock(config)
    write_checkpoint(tmp_path / "hydra.pt", stock, config)
    batch = to_batch(atoms, dtype)
    e_ref, f_ref = energy_forces(stock, batch)
    # as a hydra model with the reduced backbone, sliced by the tool ...
    slice_checkpoint(tmp_path / "hydra.pt", tmp_path / "hydra_all.pt")
    hydra = load_model_and_weights_from_checkpoint(str(tmp_path / "hydra_all.pt")).eval()
    assert type(hydra.backbone).__name__ == "EquiformerV2ReducedBackbone"
    e, f = energy_forces(hydra, batch)
    assert rel_err(e, e_ref) <= 1e-5 and rel_err(f, f_ref) <= 1e-5
    # ... and as a monolithic reduced model initialised from the hydra checkpoint (heads included)
    e, f = energy_forces(Reduced(pretrained_checkpoint=str(tmp_path / "hydra.pt")).eval(), batch)
    assert rel_err(e, e_ref) <= 1e-5 and rel_err(f, f_ref) <= 1e-5


def test_reduced_backbone_loads_the_kept_blocks_of_a_monolithic_checkpoint(stock_checkpoint):
    path, stock = stock_checkpoint
    backbone = registry.get_model_class("equiformer_v2_reduced_backbone")(
        pretrained_checkpoint=str(path), kept_blocks=[1, 3], activation_checkpoint=False
    )
    weights = backbone.state_dict()
    dropped = ("energy_block.", "force_block.", "blocks.2.", "blocks.3.")
    assert set(weights) == {k for k in stock.state_dict() if not k.startswith(dropped)}
    for j, k in enumerate([1, 3]):
        for name, value in stock.blocks[k].state_dict().items():
            assert torch.equal(weights[f"blocks.{j}.{name}"], value)
    assert torch.equal(weights["norm.affine_weight"], stock.state_dict()["norm.affine_weight"])


def test_block_outputs_are_exposed(stock_checkpoint, tmp_path):
    path, stock = stock_checkpoint
    reduced = Reduced(pretrained_checkpoint=str(path), num_blocks_kept=3).eval()
    batch = to_batch([molecule_atoms(), slab_atoms()])
    n_atoms = batch.natoms.sum().item()
    with capture_block_outputs(stock) as full:
        energy_forces(stock, batch)
    with capture_block_outputs(reduced) as outputs:
        torch.manual_seed(1)
        out = reduced(batch)
    assert [o.shape for o in outputs] == [(n_atoms, 9, 8)] * 3 and len(full) == 4
    # the first three blocks of the full model compute exactly what the 3-block model computes
    assert all(torch.equal(a, b) for a, b in zip(outputs, full[:3]))
    assert not torch.allclose(full[3], full[2])
    # the recorded tensors are in the graph, the last one feeds the heads (through the final norm)
    (grad,) = torch.autograd.grad(out["energy"].sum(), outputs[-1], retain_graph=True)
    assert grad.abs().sum() > 0
    # hooks are gone after the context
    reduced(to_batch([molecule_atoms()]))
    assert outputs[0].shape[0] == n_atoms
    # hydra models: the backbone's blocks
    hydra = registry.get_model_class("hydra")(
        backbone={"model": "equiformer_v2_reduced_backbone", "pretrained_checkpoint": str(path), "kept_blocks": [0, 2]},
        heads=copy.deepcopy(TINY_EQV2_HEADS),
    ).eval()
    with capture_block_outputs(hydra) as hydra_outputs:
        energy_forces(hydra, batch)
    assert len(hydra_outputs) == 2 and torch.equal(hydra_outputs[0], full[0])


def test_config_contradicting_the_checkpoint_is_an_error(stock_checkpoint):
    path, _ = stock_checkpoint
    with pytest.raises(PruneError, match=r"sphere_channels=16 but pretrained_checkpoint .* sphere_channels=8"):
        Reduced(pretrained_checkpoint=str(path), sphere_channels=16)
    with pytest.raises(PruneError, match=r"lmax_list=\[6\] but .* lmax_list=\[2\]"):
        Reduced(pretrained_checkpoint=str(path), lmax_list=[6])
    with pytest.raises(PruneError, match="num_layers=8 but pretrained_checkpoint .* has 4 transformer blocks"):
        Reduced(pretrained_checkpoint=str(path), num_layers=8)
    # repeating the checkpoint's value, or changing what the weights do not fix, is fine
    model = Reduced(pretrained_checkpoint=str(path), sphere_channels=8, max_neighbors=10, regress_forces=False,
                    num_blocks_kept=2)
    assert model.max_neighbors == 10 and not model.regress_forces and model.num_layers == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_blocks_kept": 5}, "cannot keep 5 blocks: the source model has 4"),
        ({"kept_blocks": [2, 0]}, "not in increasing order"),
        ({"kept_blocks": [0, 4]}, r"block\(s\) \[4\] do not exist"),
        ({"num_blocks_kept": 2, "kept_blocks": [0, 1]}, "either num_blocks_kept or kept_blocks"),
    ],
)
def test_bad_block_choices_are_errors(stock_checkpoint, kwargs, message):
    path, _ = stock_checkpoint
    with pytest.raises(PruneError, match=message):
        Reduced(pretrained_checkpoint=str(path), **kwargs)


def test_bad_sources_are_errors(tmp_path):
    from conftest import build_stock as build_gemnet, tiny_config

    with pytest.raises(PruneError, match="no such file"):
        Reduced(pretrained_checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(PruneError, match="needs num_layers"):
        Reduced(**{k: v for k, v in TINY_EQV2.items() if k != "num_layers"})
    gemnet = {"name": "gemnet_oc", **tiny_config()}
    write_checkpoint(tmp_path / "gemnet.pt", build_gemnet(gemnet), gemnet)
    with pytest.raises(PruneError, match="holds a 'gemnet_oc' model; expected an EquiformerV2 checkpoint"):
        Reduced(pretrained_checkpoint=str(tmp_path / "gemnet.pt"))


def test_from_scratch_model_is_a_stock_model_with_fewer_layers():
    torch.manual_seed(0)
    model = Reduced(num_blocks_kept=2, **TINY_EQV2)
    assert len(model.blocks) == 2 and model.source_blocks == [0, 1] and model.resolved_config["num_layers"] == 2
    stock = EquiformerV2(**{**TINY_EQV2, "num_layers": 2})
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in stock.parameters())


def test_stock_registry_resolves_the_names_in_a_fresh_interpreter():
    code = (
        "from fairchem.core.common.registry import registry\n"
        "print(registry.get_model_class('equiformer_v2_reduced').__qualname__,"
        " registry.get_model_class('equiformer_v2_reduced_backbone').__qualname__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "EquiformerV2Reduced EquiformerV2ReducedBackbone"
