"""A JMP checkpoint converted by fairchem_prune.jmp reproduces JMP's own outputs (tests/fixtures/jmp:
a tiny JMP pre-training model and JMP's outputs for 10 systems, made with JMP's code)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from conftest import rel_err

from fairchem_prune.checkpoints import load_source
from fairchem_prune.architectures.gemnet_oc import capture_final_mlp_features
from fairchem_prune.jmp import JMP_TASKS, convert_jmp, pretraining_parameter_count, read_jmp_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "jmp"
JMP_CHECKPOINT = FIXTURES / "jmp_tiny.pt"
REFERENCE = np.load(FIXTURES / "jmp_tiny_reference.npz")
META = json.loads((FIXTURES / "jmp_tiny_meta.json").read_text())
SYSTEMS = {system["name"]: system for system in META["systems"]}
GRAPH_CUTOFFS = ("cutoff", "cutoff_qint", "cutoff_aeaint", "cutoff_aint")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``converted(task, weights, **options)``: the fixture converted once per setting, cached."""
    root, cache = tmp_path_factory.mktemp("converted"), {}

    def convert(task: str, weights: str = "ema"):
        if (task, weights) not in cache:
            cache[task, weights] = root / f"{task}_{weights}.pt"
            convert_jmp(JMP_CHECKPOINT, cache[task, weights], task=task, weights=weights)
        return cache[task, weights]

    return convert


def with_model(path: Path, out: Path, **changes) -> Path:
    """A copy of checkpoint ``path`` whose model config has ``changes`` (e.g. the graph cutoffs)."""
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["config"]["model"].update(changes)
    torch.save(checkpoint, out)
    return out


def atoms_of(name: str) -> Atoms:
    return Atoms(numbers=REFERENCE[f"{name}__atomic_numbers"], positions=REFERENCE[f"{name}__pos"],
                 cell=REFERENCE[f"{name}__cell"], pbc=SYSTEMS[name]["pbc_all_dims"], tags=REFERENCE[f"{name}__tags"])


def reference(weights: str, name: str, key: str) -> np.ndarray:
    return REFERENCE[f"{weights}__{name}__{key}"]


def calculators(path: Path, tmp_path: Path) -> dict:
    """OCPCalculator of the converted checkpoint per graph cutoff of the systems (the 8 Å ones with the
    model's cutoffs set to 8 Å)."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    calcs = {}
    for cutoff in sorted({system["cutoff_all_graphs"] for system in META["systems"]}):
        changed = with_model(path, tmp_path / f"cutoff_{cutoff:g}.pt", **{key: cutoff for key in GRAPH_CUTOFFS})
        calcs[cutoff] = OCPCalculator(checkpoint_path=str(changed), cpu=True, seed=0)
    return calcs


@pytest.mark.parametrize("weights", ["ema", "raw"])
@pytest.mark.parametrize("task", JMP_TASKS)
def test_converted_checkpoint_reproduces_jmp_energies_and_forces_in_ev(converted, task, weights, tmp_path, one_thread):
    calcs = calculators(converted(task, weights), tmp_path)
    head = JMP_TASKS.index(task)
    std = META["normalization_std"][task]
    for name, system in SYSTEMS.items():
        atoms = atoms_of(name)
        atoms.calc = calcs[system["cutoff_all_graphs"]]
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        energy_ref = reference(weights, name, "energy")[head] * std["y"]
        forces_ref = reference(weights, name, "forces")[..., head] * std["force"]
        assert abs(energy - energy_ref) / abs(energy_ref) <= 1e-4, (name, energy, energy_ref)
        # 1e-4 of the largest force, and float32's rounding of the summed per-edge terms (2e-6 eV/Å, CPU-
        # dependent) where every force nearly cancels (bulk Si: 0.0064 eV/Å at most)
        error = np.abs(forces - forces_ref).max()
        assert error <= 1e-4 * np.abs(forces_ref).max() + 2e-6, (name, error)


def test_the_two_weight_readings_give_different_outputs():
    """So that the test above tells them apart."""
    for name in SYSTEMS:
        ema, raw = reference("ema", name, "energy"), reference("raw", name, "energy")
        assert (np.abs(ema - raw) / np.abs(raw)).min() > 1e-3, name  # every head, 10x the tolerance


def main_graph_and_features(model, atoms: Atoms):
    """(edge keys (src, dst, cell offset) of the symmetrised main graph, FinalMLPFeatures) of one
    forward pass of ``model`` on ``atoms``, at its positions as given (AtomsToGraphs wraps them into
    the cell, which changes the cell offsets of the same edges)."""
    from conftest import to_batch

    recorded = {}
    symmetrize = model.symmetrize_edges

    def record(graph, batch_idx):
        recorded["graph"], id_swap = symmetrize(graph, batch_idx)
        return recorded["graph"], id_swap

    batch = to_batch([atoms])
    batch.pos = torch.tensor(atoms.positions, dtype=torch.float32)
    model.symmetrize_edges = record
    try:
        with torch.no_grad(), capture_final_mlp_features(model) as features:
            model(batch)
    finally:
        del model.symmetrize_edges
    graph = recorded["graph"]
    keys = [(int(s), int(t), *map(round, offset.tolist())) for (s, t), offset
            in zip(graph["edge_index"].T, graph["cell_offset"])]
    return keys, features


@pytest.mark.parametrize("weights", ["ema", "raw"])
@pytest.mark.parametrize("task", ["oc20", "none"])
def test_per_block_features_match_jmp(converted, task, weights, tmp_path, one_thread):
    """f_1..f_{b+1} (node and edge branches) and the FinalMLP outputs, edge by edge of JMP's graph."""
    models = {}
    for cutoff in (8.0, 12.0):
        path = with_model(converted(task, weights), tmp_path / f"{cutoff:g}.pt", **{key: cutoff for key in GRAPH_CUTOFFS})
        models[cutoff] = load_source(path).model
    for name, system in SYSTEMS.items():
        keys, features = main_graph_and_features(models[system["cutoff_all_graphs"]], atoms_of(name))
        jmp_keys = [(int(s), int(t), *map(round, offset.tolist())) for (s, t), offset
                    in zip(REFERENCE[f"{name}__graph_edge_index"].T, REFERENCE[f"{name}__graph_cell_offset"])]
        assert sorted(keys) == sorted(jmp_keys), name  # the same edges, cell offsets in JMP's sign
        order = [keys.index(key) for key in jmp_keys]
        node = torch.stack(features.node_blocks()).numpy()
        edge = torch.stack(features.edge_blocks())[:, order].numpy()
        assert rel_err(torch.tensor(node), torch.tensor(reference(weights, name, "xs_E"))) <= 1e-4, name
        assert rel_err(torch.tensor(edge), torch.tensor(reference(weights, name, "xs_F"))) <= 1e-4, name
        assert rel_err(features.node_layers[-1], torch.tensor(reference(weights, name, "x_E"))) <= 1e-4, name
        assert rel_err(features.edge_layers[-1][order], torch.tensor(reference(weights, name, "x_F"))) <= 1e-4, name


@pytest.mark.parametrize("behaviour, systems", [
    ({"absolute_rbf_cutoff": None}, ["c60_8A_ani1x", "cluster24_8A_ani1x"]),
    ({"cell_offset_convention": "fairchem"}, ["cu111_O_slab_oc20", "si_bulk_12A"]),
])
def test_each_jmp_behaviour_is_needed(converted, behaviour, systems, tmp_path, one_thread):
    """Without the fixed basis scale the 8 Å systems differ, without JMP's offset sign the periodic
    ones: by more than 10x the tolerance of the equivalence test in energy or forces."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    std = META["normalization_std"]["oc20"]
    for name in systems:
        cutoffs = {key: SYSTEMS[name]["cutoff_all_graphs"] for key in GRAPH_CUTOFFS}
        energy_ref = reference("ema", name, "energy")[0] * std["y"]
        forces_ref = reference("ema", name, "forces")[..., 0] * std["force"]
        errors = {}
        for label, changes in (("jmp", {}), ("fairchem", behaviour)):
            path = with_model(converted("oc20"), tmp_path / f"{label}.pt", **cutoffs, **changes)
            atoms = atoms_of(name)
            atoms.calc = OCPCalculator(checkpoint_path=str(path), cpu=True, seed=0)
            errors[label] = max(abs(atoms.get_potential_energy() - energy_ref) / abs(energy_ref),
                                np.abs(atoms.get_forces() - forces_ref).max() / np.abs(forces_ref).max())
        assert errors["jmp"] <= 1e-4 and errors["fairchem"] > 1e-3, (name, behaviour, errors)


def test_a_molecule_with_ase_default_tags_gets_jmps_molecule_outputs(converted, tmp_path, one_thread):
    """JMP tags every atom of a molecule 2; the converted model reads a structure whose tags are all 0
    (ASE's default) so (``untagged_tag: 2``): the fixture's molecules without tags give JMP's outputs,
    the user's atoms keep tags 0, and in a batch a tagged slab keeps its tags. A checkpoint without the
    option refuses the untagged molecule in one line that names ``atoms.set_tags(2)``."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator
    from fairchem.core.datasets import data_list_collater
    from fairchem.core.preprocessing import AtomsToGraphs

    from fairchem_prune.errors import PruneError

    std = META["normalization_std"]["oc20"]
    calc = OCPCalculator(checkpoint_path=str(converted("oc20")), cpu=True, seed=0)
    for name in ("methane_12A", "benzene_12A"):
        atoms = atoms_of(name)
        atoms.set_tags(0)
        atoms.calc = calc
        energy_ref = reference("ema", name, "energy")[0] * std["y"]
        forces_ref = reference("ema", name, "forces")[..., 0] * std["force"]
        assert abs(atoms.get_potential_energy() - energy_ref) / abs(energy_ref) <= 1e-4, name
        assert np.abs(atoms.get_forces() - forces_ref).max() / np.abs(forces_ref).max() <= 1e-4, name
        assert not atoms.get_tags().any()
    molecule, slab = atoms_of("methane_12A"), atoms_of("cu111_O_slab_oc20")
    molecule.set_tags(0)
    batch = data_list_collater(AtomsToGraphs(r_edges=False).convert_all([molecule, slab], disable_tqdm=True))
    tags = calc.trainer.model.quadruplet_tags(batch)
    assert tags.tolist() == [2] * len(molecule) + REFERENCE["cu111_O_slab_oc20__tags"].tolist()
    assert not batch.tags[:len(molecule)].any()

    older = OCPCalculator(checkpoint_path=str(with_model(converted("oc20"), tmp_path / "older.pt", untagged_tag=None)),
                          cpu=True, seed=0)
    molecule.calc = older
    with pytest.raises(PruneError, match=r"have atom tags \[0\] .* \(ASE: atoms.set_tags\(2\);"):
        molecule.get_potential_energy()


def test_checkpoint_records_jmp_architecture_graph_and_normalizers(converted):
    checkpoint = torch.load(converted("oc20"), weights_only=False)
    model = checkpoint["config"]["model"]
    assert model["name"] == "gemnet_oc_reduced" and "pretrained_checkpoint" not in model
    backbone = META["backbone"]
    for key in ("num_blocks", "emb_size_atom", "emb_size_edge", "num_radial", "num_spherical", "num_concat"):
        assert model[key] == backbone[key]
    assert model["qint_tags"] == [1, 2] and model["num_elements"] == 120 and model["absolute_rbf_cutoff"] == 12.0
    assert model["cell_offset_convention"] == "jmp" and model["num_mlps"] == 5 and model["activation"] == "silu"
    assert model["untagged_tag"] == 2
    assert model["use_pbc"] and model["use_pbc_single"]  # one graph per structure, as JMP builds them
    assert [model[key] for key in GRAPH_CUTOFFS] == [12.0] * 4
    assert (model["max_neighbors"], model["max_neighbors_qint"], model["max_neighbors_aeaint"],
            model["max_neighbors_aint"]) == (30, 8, 20, 1000)
    std = META["normalization_std"]["oc20"]
    assert checkpoint["normalizers"]["energy"]["rmsd"].item() == pytest.approx(std["y"])
    assert checkpoint["normalizers"]["forces"]["rmsd"].item() == pytest.approx(std["force"])
    assert checkpoint["ema"] is None and "optimizer" not in checkpoint
    ani1x = torch.load(converted("ani1x"), weights_only=False)["config"]["model"]
    assert [ani1x[key] for key in GRAPH_CUTOFFS] == [8.0] * 4  # JMP's ANI-1x graphs
    none = torch.load(converted("none"), weights_only=False)
    assert none["normalizers"] == {} and none["config"]["model"]["num_mlps"] == 5


def test_ema_all_takes_the_ema_of_the_output_block_layers(converted):
    jmp = read_jmp_checkpoint(JMP_CHECKPOINT)
    ema = dict(zip(jmp.parameter_keys(), jmp.ema))
    states = {w: torch.load(converted("oc20", w), weights_only=False)["state_dict"] for w in ("ema", "ema-all", "raw")}
    layer = "out_blocks.1.layers.0.linear.weight"
    assert torch.equal(states["ema-all"][layer], ema[f"backbone.{layer}"])
    assert torch.equal(states["ema"][layer], states["raw"][layer])  # JMP's fine-tuning reading
    assert not torch.equal(states["ema"][layer], states["ema-all"][layer])
    other = "int_blocks.0.dense_ca.linear.weight"
    assert torch.equal(states["ema"][other], states["ema-all"][other]) and torch.equal(states["ema"][other], ema[f"backbone.{other}"])
    for state in states.values():  # the alias always agrees with the module it names
        assert torch.equal(state[layer], state[layer.replace(".layers.", ".seq_energy_pre.")])


def test_task_none_keeps_the_backbone_and_a_fresh_head(converted):
    with_head = torch.load(converted("oc20"), weights_only=False)["state_dict"]
    fresh = torch.load(converted("none"), weights_only=False)["state_dict"]
    assert set(with_head) == set(fresh)
    for key in with_head:
        same = torch.equal(with_head[key], fresh[key])
        assert same is not key.startswith(("out_energy.", "out_forces.")), key


def test_pretraining_parameter_count_is_jmps(converted):
    """The converted architecture plus the three other heads counts what JMP's checkpoint holds."""
    jmp = read_jmp_checkpoint(JMP_CHECKPOINT)
    model = torch.load(converted("oc20"), weights_only=False)["config"]["model"]
    assert pretraining_parameter_count(model) == jmp.num_parameters() == META["checkpoint"]["num_parameters"]


def test_converted_model_reduces_like_any_gemnet_oc(converted, tmp_path, one_thread):
    """Slicing the converted checkpoint to 2 blocks equals a hand-built 2-block model with copied weights."""
    from conftest import hand_copy_gemnet, slab_atoms, to_batch
    from fairchem.core.common.registry import registry

    from fairchem_prune.slicing import slice_checkpoint

    sliced = tmp_path / "jmp_2b.pt"
    slice_checkpoint(converted("oc20"), sliced, num_blocks_kept=2)
    reduced = load_source(sliced).model
    source = load_source(converted("oc20")).model
    config = copy.deepcopy(source.resolved_config)
    config.update(num_blocks=2)
    config.pop("source_blocks")
    hand_built = registry.get_model_class("gemnet_oc_reduced")(**config).eval()
    hand_copy_gemnet(source, hand_built, [0, 1], config["emb_size_atom"], config["emb_size_edge"])
    batch = to_batch([slab_atoms(), atoms_of("ethanol_12A")])
    out, expected = reduced(batch), hand_built(batch)
    assert torch.equal(out["energy"], expected["energy"]) and torch.equal(out["forces"], expected["forces"])
    assert not torch.allclose(out["energy"], source(batch)["energy"])
