"""GradCAM block relevance on fairchem 2 (the UMA fixture): the loss is fairchem's own compute_loss with
the checkpoint's tasks, the scores a distribution independent of batching, equal to a computation by
hand, and the command's outputs and errors."""

import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from conftest import UMA_TINY, cli

from fairchem_prune.fairchem2 import relevance as R
from fairchem_prune.fairchem2.checkpoints import load_model, read_inference_checkpoint


def labelled(atoms, charge=0, spin=None):
    """``atoms`` with EMT's energy, forces (and stress if periodic) as a single-point calculator."""
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    atoms.info["charge"] = charge
    if spin is not None:
        atoms.info["spin"] = spin
    return atoms


def slabs(n=4):
    out = []
    for i in range(n):
        slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
        slab.pbc = True
        slab.rattle(0.05, seed=i)
        slab.info.pop("adsorbate_info", None)
        out.append(labelled(slab))
    return out


def molecules():
    out = []
    for i, name in enumerate(("CH4", "H2O", "NH3", "CH3OH")):
        mol = molecule(name)
        mol.rattle(0.05, seed=i)
        out.append(labelled(mol, spin=1))
    return out


@pytest.fixture(scope="module")
def model():
    checkpoint = read_inference_checkpoint(UMA_TINY)
    return checkpoint, load_model(checkpoint, UMA_TINY)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rel_data")
    ase.io.write(folder / "slabs.extxyz", slabs())
    ase.io.write(folder / "molecules.extxyz", molecules())
    return folder


@pytest.mark.parametrize("task, make", [("oc20", slabs), ("omol", molecules)])
def test_scores_are_a_distribution_independent_of_batching(model, task, make):
    checkpoint, net = model
    tasks = R.task_losses(checkpoint, task)
    assert sorted(t.name for t in tasks) == sorted(f"{task}_{p}" for p in ("energy", "forces"))
    structures = make()
    one = R.relevance_of_structures(net, tasks, structures, task, batch_size=1)
    four = R.relevance_of_structures(net, tasks, structures[::-1], task, batch_size=4)
    np.testing.assert_allclose(one["energy"], four["energy"], rtol=1e-5)
    scores = R.scores_from_raw(one)
    assert len(scores["energy"]) == 6 and sum(scores["energy"]) == pytest.approx(1.0, abs=1e-12)
    assert min(scores["energy"]) > 0 and max(scores["energy"]) < 0.9
    assert scores["combined"] == scores["energy"] and scores["forces"] == [None] * 6


def test_the_loss_is_fairchems_compute_loss_summed(model):
    """On one batch: the summed loss equals fairchem's compute_loss with the tasks' reduction set to sum
    in their configs, and its mean-reduced loss times the number of samples; its energy part is
    coefficient x |E - E_label| / (rmsd x natoms) with E what FAIRChemCalculator predicts (EMA), i.e. the
    normalizer and element references are applied as in training."""
    import hydra
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit
    from fairchem.core.units.mlip_unit.mlip_unit import compute_loss

    checkpoint, net = model
    structures = slabs(3)
    summed = R.task_losses(checkpoint, "oc20")
    stock = R.task_losses(checkpoint, "oc20", summed=False)
    configs = [dict(t) for t in checkpoint.tasks_config if "oc20" in t["datasets"]]
    for config in configs:
        config["loss_fn"] = {**config["loss_fn"], "reduction": "sum"}
    by_config = [hydra.utils.instantiate(c) for c in configs]
    batch = R.make_batch(structures, "oc20", summed)
    with R.differentiable_heads(net), torch.enable_grad():
        pred = net(batch)
        ours = compute_loss(summed, pred, batch)
        theirs = compute_loss(by_config, pred, batch)
        mean = compute_loss(stock, pred, batch)
    natoms = int(batch.natoms.sum())
    for name in ours:
        assert ours[name].item() == pytest.approx(theirs[name].item(), rel=1e-6)
        count = len(structures) if name.endswith("energy") else natoms
        assert ours[name].item() == pytest.approx(mean[name].item() * count, rel=1e-5)
    calc = FAIRChemCalculator(load_predict_unit(str(UMA_TINY), inference_settings="batch", device="cpu"), task_name="oc20")
    energy_task = next(t for t in summed if t.property == "energy")
    expected = sum(abs(calc.get_potential_energy(s.copy()) - s.calc.results["energy"]) / len(s) for s in structures)
    expected *= energy_task.loss_fn.coefficient / energy_task.normalizer.rmsd.item()
    assert ours["oc20_energy"].item() == pytest.approx(expected, rel=1e-4)


def test_scores_equal_a_gradient_by_hand(model):
    """GradCAM by hand on one batch: hooks on the blocks, autograd.grad of the summed loss."""
    checkpoint, net = model
    tasks = R.task_losses(checkpoint, "omol")
    structures = molecules()
    batch = R.make_batch(structures, "omol", tasks)
    outputs = []
    handles = [b.register_forward_hook(lambda m, a, o: outputs.append(o)) for b in net.module.backbone.blocks]
    try:
        with R.differentiable_heads(net), torch.enable_grad():
            loss = R.task_loss(net, tasks, batch)
            grads = torch.autograd.grad(loss, outputs)
    finally:
        for h in handles:
            h.remove()
    by_hand = np.array([torch.relu(f * g).double().mean().item() for f, g in zip(outputs, grads)])
    ours = R.relevance_of_structures(net, tasks, structures, "omol", batch_size=len(structures))
    np.testing.assert_allclose(ours["energy"], by_hand, rtol=1e-6)


def test_the_command_writes_json_and_plot_and_names_original_blocks(data, tmp_path):
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    sliced = tmp_path / "kept0135.pt"
    slice_inference_checkpoint(UMA_TINY, sliced, kept_blocks=[0, 1, 3, 5])
    out = tmp_path / "rel.json"
    result = cli("relevance", "--checkpoint", sliced, "--task", "oc20", "--data", data / "slabs.extxyz",
                 "--num-samples", "3", "--batch-size", "2", "--out", out, cwd=tmp_path)
    report = json.loads(out.read_text())
    assert report["blocks"] == ["b_0", "b_1", "b_3", "b_5"] and report["task"] == "oc20"
    entry = report["datasets"]["slabs"]
    assert set(entry) == {"energy", "forces", "combined", "raw", "num_samples"} and entry["num_samples"] == 3
    assert sum(entry["combined"]) == pytest.approx(1.0) and entry["forces"] == [None] * 4
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"
    assert "b_5" in result.stdout and len((result.stdout + result.stderr).splitlines()) < 30
    again = cli("relevance", "--checkpoint", sliced, "--task", "oc20", "--data", data / "slabs.extxyz", "--out", out,
                cwd=tmp_path, check=False)
    assert again.returncode == 2 and "already exists" in again.stderr.strip().splitlines()[-1]


def test_the_command_refuses_bad_input_with_one_line(data, tmp_path):
    unlabelled = tmp_path / "bare.xyz"
    ase.io.write(unlabelled, molecule("CH4"))
    (tmp_path / "junk.xyz").write_text("not a structure\n")
    (tmp_path / "empty").mkdir()
    base = ["relevance", "--checkpoint", UMA_TINY, "--out", tmp_path / "r.json"]
    for extra, message in (
        (["--task", "nope", "--data", data / "slabs.extxyz"],
         "task 'nope' is not one of the model's tasks: omc, omol, odac, oc20, omat, omat_rattle, oc22, oc25"),
        (["--task", "oc20", "--data", tmp_path / "missing.xyz"], f"data {tmp_path / 'missing.xyz'}: no such file or folder"),
        (["--task", "omol", "--data", unlabelled], "has no energy or forces label"),
        (["--task", "omol", "--data", tmp_path / "junk.xyz"], "cannot be read by ASE"),
        (["--task", "omol", "--data", tmp_path / "empty"], "holds no ASE database"),
    ):
        result = cli(*base, *extra, cwd=tmp_path, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and lines[-1].startswith("error: ") and message in lines[-1], result.stderr[-800:]
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "r.json").exists()
