"""The fairchem 2 demo's data and teacher: the demo mix as fairchem 2 ASE-LMDB data sets, the ethanol
fine-tuning template, the teacher's pre-training from random weights by ``fairchem -c``, and the mix as
a distillation template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import fairchem

from fairchem_prune.demo.generation import DemoSize

TINY = DemoSize(g2_frames=2, slabs=16, rmd17_frames=40, md22_frames=1, qm9_conformers=1, g2_molecules=6)


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    from fairchem_prune.demo.generation import make_demo_data
    from fairchem_prune.fairchem2.demo_data import mix_data, write_source

    root = tmp_path_factory.mktemp("mix") / "data"
    make_demo_data(root, TINY, seed=0, writer=write_source, workers=1)
    return mix_data(root, "tiny", 0, print)


def test_the_demo_mix_is_fairchem_ase_lmdb_with_each_tasks_charge_spin_and_labels(mix):
    from ase.calculators.emt import EMT
    from fairchem.core.datasets import AseDBDataset

    counts = mix.manifest["counts"]
    for split in ("train", "val"):
        for source, folder in mix.split(split).items():
            assert len(AseDBDataset({"src": str(folder)})) == counts[f"pretrain/{split}/{source}"] > 0
    molecule = AseDBDataset({"src": str(mix.split("train")["xtb_molecules"])}).get_atoms(0)
    assert (molecule.info["charge"], molecule.info["spin"]) == (0, 1) and not molecule.pbc.any()
    slab = AseDBDataset({"src": str(mix.split("val")["emt_slabs"])}).get_atoms(0)
    assert slab.pbc[:2].all() and len(slab.constraints[0].index) == 4  # the bottom layer of a 2x2x3 slab stays fixed
    energy, forces = slab.get_potential_energy(), slab.get_forces(apply_constraint=False)
    slab.calc = EMT()
    assert abs(slab.get_potential_energy() - energy) < 1e-6
    assert np.allclose(slab.get_forces(apply_constraint=False), forces, atol=1e-6)


def test_the_ethanol_task_is_a_fairchem_finetuning_template_of_the_rmd17_frames(mix, tmp_path):
    from fairchem.core.datasets import AseDBDataset

    from fairchem_prune.fairchem2.demo_data import ethanol_task

    template = ethanol_task(mix, tmp_path / "ethanol", (20, 8, 12), 42, False, print)
    sizes = {split: len(AseDBDataset({"src": str(tmp_path / "ethanol" / split)})) for split in ("train", "val", "test")}
    assert sizes == {"train": 20, "val": 8, "test": 12}
    frame = AseDBDataset({"src": str(tmp_path / "ethanol" / "test")}).get_atoms(0)
    assert frame.get_chemical_formula() == "C2H6O" and (frame.info["charge"], frame.info["spin"]) == (0, 1)
    data = yaml.safe_load((template.parent / "data" / "uma_conserving_data_task_energy_force.yaml").read_text())
    assert data["dataset_name"] == "omol" and len(data["elem_refs"]) == 100 and data["normalizer_rmsd"] > 0
    assert ethanol_task(mix, tmp_path / "ethanol", (20, 8, 12), 42, False, print) == template  # kept


@pytest.fixture(scope="module")
def teacher(mix, tmp_path_factory):
    """The teacher's config on the tiny mix, 3 epochs of batches of 4 with a short EMA, trained by ``fairchem -c``."""
    from fairchem_prune.fairchem2.demo_teacher import write_teacher_config

    out = tmp_path_factory.mktemp("teacher")
    run = write_teacher_config(mix, out, epochs=3)
    assert write_teacher_config(mix, out, epochs=3) == run  # the same config: kept, a run would resume
    config = yaml.safe_load(run.config.read_text())
    config.update(batch_size=4, evaluate_every_n_steps=6)
    config["runner"]["train_eval_unit"]["ema_decay"] = 0.5
    run.config.write_text(yaml.safe_dump(config, sort_keys=False))
    result = fairchem(run.config, out / "fairchem.log", out)
    assert result.returncode == 0, (out / "fairchem.log").read_text()[-3000:]
    return run


def test_the_teacher_pretrains_from_random_weights_with_fairchem(mix, teacher):
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.fairchem2.demo_teacher import teacher_record

    record = teacher_record(teacher, mix, "test")
    losses = [json.loads(line)["loss"] for line in teacher.paths.metrics.read_text().splitlines() if '"train"' in line]
    print("teacher losses", losses[:3], losses[-3:], record["val_curve"])
    assert len(losses) >= 18 and np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    assert record["blocks"] == 6 and record["val_curve"][-1][0] == pytest.approx(3.0)
    unit = load_predict_unit(str(teacher.paths.final_checkpoint), inference_settings="batch", device="cpu")
    assert set(unit.dataset_to_tasks) == {"omol", "oc20"}


def test_a_reduced_teacher_distils_on_the_mix_template(mix, teacher, tmp_path):
    """The mix as a fine-tuning template with the teacher's tasks: distill-config of the teacher's first
    4 blocks on both sources runs with fairchem, and the student ends closer to the teacher on the
    training structures than the slice started."""
    from fairchem.core.datasets import AseDBDataset

    from fairchem_prune.fairchem2.demo_teacher import export_teacher, write_mix_template
    from fairchem_prune.fairchem2.finetune import data_sources
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    full = tmp_path / "teacher.pt"
    export_teacher(teacher.paths.final_checkpoint, full)
    template = write_mix_template(mix, full, tmp_path / "mix.yaml")
    assert sorted(data_sources(template, "train")) == sorted(str(p.resolve()) for p in mix.split("train").values())
    sliced = tmp_path / "teacher_4b.pt"
    slice_inference_checkpoint(full, sliced, num_blocks_kept=4)
    from conftest import cli

    config = tmp_path / "kd.yaml"
    cli("distill-config", "--template", template, "--student", sliced, "--teacher", full, "--output", config,
        "--device", "cpu", "--samples", 32, "--batch-size", 4, "--lr", 2e-3, "--ema-decay", 0.5,
        "--sampling", "uniform", "--run-dir", tmp_path / "runs", cwd=tmp_path)
    result = fairchem(config, tmp_path / "fairchem.log", tmp_path)
    assert result.returncode == 0, (tmp_path / "fairchem.log").read_text()[-3000:]
    structures = [AseDBDataset({"src": str(folder)}).get_atoms(i) for folder in mix.split("train").values() for i in range(4)]
    tasks = ["omol"] * 4 + ["oc20"] * 4
    reference = _energies(full, structures, tasks)
    before = np.abs(_energies(sliced, structures, tasks) - reference).mean()
    after = np.abs(_energies(tmp_path / "runs" / "kd" / "checkpoints" / "final" / "inference_ckpt.pt", structures, tasks)
                   - reference).mean()
    print(f"energy gap to the teacher, sliced -> distilled: {before:.3f} -> {after:.3f} eV")
    assert after < 0.7 * before


def _energies(checkpoint: Path, structures, tasks) -> np.ndarray:
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    unit = load_predict_unit(str(checkpoint), inference_settings="batch", device="cpu")
    energies = []
    for atoms, task in zip(structures, tasks):
        atoms = atoms.copy()
        atoms.calc = FAIRChemCalculator(unit, task_name=task)
        energies.append(atoms.get_potential_energy())
    return np.array(energies)
