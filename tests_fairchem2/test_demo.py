"""The fairchem 2 demo's data and teacher: the demo mix as fairchem 2 ASE-LMDB data sets, the ethanol
fine-tuning template, the teacher's pre-training from random weights by ``fairchem -c``, and the mix as
a distillation template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import cli, fairchem

from fairchem_prune.demo.generation import DemoSize

TINY = DemoSize(g2_frames=2, slabs=16, rmd17_frames=80, md22_frames=1, qm9_conformers=1, g2_molecules=6)


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
    """The teacher's config on the tiny mix, 6 epochs of batches of 4 with a short EMA, trained by ``fairchem -c``
    and validated on its training structures (a learning curve without the noise of the batches' losses)."""
    from fairchem_prune.fairchem2.demo_teacher import write_teacher_config

    out = tmp_path_factory.mktemp("teacher")
    run = write_teacher_config(mix, out, epochs=6)
    assert write_teacher_config(mix, out, epochs=6) == run  # the same config: kept, a run would resume
    config = yaml.safe_load(run.config.read_text())
    config.update(batch_size=4, evaluate_every_n_steps=6, checkpoint_every_n_steps=12)
    config["runner"]["train_eval_unit"]["ema_decay"] = 0.5
    for task, splits in config["val_dataset"]["dataset_configs"].items():  # validated on its training structures
        splits["splits"]["val"]["src"] = config["train_dataset"]["dataset_configs"][task]["splits"]["train"]["src"]
    run.config.write_text(yaml.safe_dump(config, sort_keys=False))
    result = fairchem(run.config, out / "fairchem.log", out)
    assert result.returncode == 0, (out / "fairchem.log").read_text()[-3000:]
    return run


def test_the_teacher_pretrains_from_random_weights_with_fairchem(mix, teacher):
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.fairchem2.demo_teacher import teacher_record

    record = teacher_record(teacher, mix, "test")
    curve = np.array(record["val_curve"])  # epoch, omol and oc20 force MAE on the training structures
    print("teacher training-set force MAE", curve.tolist())
    # measured: omol 0.664 -> 0.614, oc20 3.22 -> 3.07 eV/Å in 42 steps (a run whose forces do not train: -0 %)
    assert len(curve) >= 6 and (curve[-1, 1:] < 0.97 * curve[0, 1:]).all(), curve
    assert record["blocks"] == 6 and record["val_curve"][-1][0] == pytest.approx(6.0)
    unit = load_predict_unit(str(teacher.paths.final_checkpoint), inference_settings="batch", device="cpu")
    assert set(unit.dataset_to_tasks) == {"omol", "oc20"}


def test_a_reduced_teacher_distils_on_the_mix_template(mix, teacher, tmp_path):
    """The mix as a fine-tuning template with the teacher's tasks: distill-config of the teacher's first
    4 blocks on both sources runs with fairchem, and the student's forces end closer to the teacher's on
    the training structures than the slice's were (the teacher's tasks weigh forces 10 : 1 over energies)."""
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
    config = tmp_path / "kd.yaml"
    cli("distill-config", "--template", template, "--student", sliced, "--teacher", full, "--output", config,
        "--device", "cpu", "--samples", 64, "--batch-size", 4, "--lr", 2e-3, "--ema-decay", 0.5,
        "--sampling", "uniform", "--run-dir", tmp_path / "runs", cwd=tmp_path)
    result = fairchem(config, tmp_path / "fairchem.log", tmp_path)
    assert result.returncode == 0, (tmp_path / "fairchem.log").read_text()[-3000:]
    structures = [AseDBDataset({"src": str(folder)}).get_atoms(i) for folder in mix.split("train").values() for i in range(4)]
    tasks = ["omol"] * 4 + ["oc20"] * 4
    reference = _forces(full, structures, tasks)
    before = np.abs(_forces(sliced, structures, tasks) - reference).mean()
    after = np.abs(_forces(tmp_path / "runs" / "kd" / "checkpoints" / "final" / "inference_ckpt.pt", structures, tasks)
                   - reference).mean()
    print(f"force gap to the teacher, sliced -> distilled: {before:.3f} -> {after:.3f} eV/Å")
    assert after < 0.7 * before


def _forces(checkpoint: Path, structures, tasks) -> np.ndarray:
    """FAIRChemCalculator's forces (eV/Å) of every structure, concatenated."""
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    unit = load_predict_unit(str(checkpoint), inference_settings="batch", device="cpu")
    forces = []
    for atoms, task in zip(structures, tasks):
        atoms = atoms.copy()
        atoms.calc = FAIRChemCalculator(unit, task_name=task)
        forces.append(atoms.get_forces(apply_constraint=False))
    return np.concatenate(forces)


@pytest.fixture(scope="module")
def quick_demo(mix, tmp_path_factory):
    """``fairchem-prune demo --quick`` on the tiny mix, run twice (the second finds every stage)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    first = cli("demo", "--quick", "--data", mix.root, "--out", out, cwd=out.parent)
    second = cli("demo", "--quick", "--data", mix.root, "--out", out, cwd=out.parent)
    return out, first, second


def test_the_quick_demo_runs_every_stage_on_fairchem_2_without_flooding_the_console(quick_demo):
    out, first, second = quick_demo
    for name in ("report.md", "relevance.png", "teacher_curve.png", "finetune.png", "finetune_curves.png", "md.png",
                 "benchmark.json", "teacher.pt"):
        assert (out / name).is_file(), name
    report = (out / "report.md").read_text()
    for section in ("Block relevance", "Table 1", "Fine-tuning", "Molecular dynamics", "Table 2", "Findings"):
        assert section in report
    console = first.stdout + first.stderr
    assert "WARNING" not in console and "Computing normalizer" not in console, console[:3000]
    assert second.stdout.count("found") >= 6 and "training (fairchem -c" not in second.stdout, second.stdout
    reduced = json.loads((out / "reduction.json").read_text())
    assert set(reduced["metrics"]) == {"teacher", "br_5b", "br_4b", "kd_5b", "kd_4b"}
    assert reduced["params"]["br_4b"] < reduced["params"]["br_5b"] < reduced["params"]["teacher"]
    tuned = json.loads((out / "finetune.json").read_text())
    assert sorted((r["init"], r["blocks"]) for r in tuned["rows"]) == [("BR", 4), ("BR", 6), ("BR+KD", 4)]
    assert all(len(r["curve"]) == 1 and r["curve"][0][0] <= r["train_seconds"] for r in tuned["rows"])
    md = json.loads((out / "md.json").read_text())
    assert len(md["models"]) == 3


def test_the_demo_scores_as_an_independent_computation_of_fairchem_calculator_outputs(mix, quick_demo):
    """Table 1's teacher entry: the S2EF metrics recomputed here from FAIRChemCalculator's predictions,
    structure by structure, on the free atoms."""
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.datasets import AseDBDataset
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.fairchem2.demo_data import SOURCE_TASKS

    out, _, _ = quick_demo
    metrics = json.loads((out / "reduction.json").read_text())["metrics"]["teacher"]
    unit = load_predict_unit(str(out / "teacher.pt"), inference_settings="batch", device="cpu")
    for source, folder in mix.split("val").items():
        dataset = AseDBDataset({"src": str(folder)})
        energy_errors, force_errors, within, cosines = [], [], [], []
        for i in range(len(dataset)):
            atoms = dataset.get_atoms(i)
            target_e, target_f = atoms.get_potential_energy(), atoms.get_forces(apply_constraint=False)
            fixed = atoms.constraints[0].index if atoms.constraints else []
            free = ~np.isin(np.arange(len(atoms)), fixed)
            atoms.calc = FAIRChemCalculator(unit, task_name=SOURCE_TASKS[source])
            error_f = np.abs(atoms.get_forces(apply_constraint=False) - target_f)[free]
            energy_errors.append(abs(atoms.get_potential_energy() - target_e))
            force_errors.append(error_f)
            within.append(energy_errors[-1] < 0.02 and error_f.max() < 0.03)
            predicted = atoms.get_forces(apply_constraint=False)[free]
            cosines.append(np.sum(predicted * target_f[free], axis=1)
                           / (np.linalg.norm(predicted, axis=1) * np.linalg.norm(target_f[free], axis=1)))
        assert metrics[source]["energy_mae"] == pytest.approx(np.mean(energy_errors), rel=1e-4)
        assert metrics[source]["forces_mae"] == pytest.approx(np.concatenate(force_errors).mean(), rel=1e-4)
        assert metrics[source]["forces_cosine_similarity"] == pytest.approx(np.concatenate(cosines).mean(), abs=1e-4)
        assert metrics[source]["energy_forces_within_threshold"] == pytest.approx(np.mean(within))


def test_the_shipped_teacher_is_the_default_demos_and_predicts_fresh_emt_slabs():
    """The shipped teacher: trained by the packaged config on the default demo data (what the default demo
    uses), its record's last validation is its curve's end, and on 12 EMT slabs it never saw its force
    error is that of its validation, far below predicting zero forces."""
    from dataclasses import asdict

    from ase.calculators.emt import EMT
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    from fairchem_prune.demo.generation import SIZES, emt_slabs
    from fairchem_prune.fairchem2.checkpoints import read_inference_checkpoint
    from fairchem_prune.fairchem2.demo import FULL
    from fairchem_prune.fairchem2.demo_data import MixData
    from fairchem_prune.fairchem2.demo_teacher import SHIPPED, TEACHER_CONFIG, _shipped_for
    from fairchem_prune.resources import config_path

    assert FULL.data_size == "standard" and FULL.teacher_epochs is None
    assert _shipped_for(MixData(Path("."), {"size": asdict(SIZES["standard"]), "seed": 0}))
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    config = yaml.safe_load(config_path(TEACHER_CONFIG).read_text())
    backbone = read_inference_checkpoint(SHIPPED).model_config["backbone"]
    packaged = config["runner"]["train_eval_unit"]["model"]["backbone"]
    assert {k: backbone[k] for k in packaged} == packaged
    assert record["epochs"] == config["epochs"] and record["val_curve"][-1][0] == pytest.approx(config["epochs"])
    assert record["val_curve"][-1][1:] == [record["val_metrics"][f"{t}.val,{t}_forces,mae"] for t in ("omol", "oc20")]

    unit = load_predict_unit(str(SHIPPED), inference_settings="batch", device="cpu")
    errors, sizes = [], []
    for slab in emt_slabs(12, seed=123):
        slab.calc = EMT()
        target = slab.get_forces(apply_constraint=False)
        free = ~np.isin(np.arange(len(slab)), slab.constraints[0].index if slab.constraints else [])
        slab.info.update(charge=0, spin=0)
        slab.calc = FAIRChemCalculator(unit, task_name="oc20")
        errors.append(np.abs(slab.get_forces(apply_constraint=False) - target)[free])
        sizes.append(np.abs(target[free]))
    mae, trivial = np.concatenate(errors).mean(), np.concatenate(sizes).mean()
    print(f"shipped teacher on fresh EMT slabs: force MAE {mae:.3f} eV/Å (validation "
          f"{record['val_metrics']['oc20.val,oc20_forces,mae']:.3f}, zero forces {trivial:.3f})")
    assert mae < 1.5 * record["val_metrics"]["oc20.val,oc20_forces,mae"] and mae < trivial / 3
