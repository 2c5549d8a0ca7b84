"""The whole pipeline on a converted JMP checkpoint (tests/fixtures/jmp): block relevance, slicing,
distillation with the converted teacher, fine-tuning with a shipped task config, and the clear error
for data without JMP's quadruplet tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAIRCHEM, fairchem, molecule_atoms, rmd17_lmdbs
from trainers.distill_helpers import distill_command, logged

from fairchem_prune.jmp import convert_jmp

REPO = Path(__file__).parents[1]
JMP_CHECKPOINT = Path(__file__).parent / "fixtures" / "jmp" / "jmp_tiny.pt"


@pytest.fixture(scope="module")
def jmp(tmp_path_factory):
    """The fixture converted with its OC20 head ("oc20") and as a backbone with a fresh head ("none")."""
    root = tmp_path_factory.mktemp("jmp")
    paths = {task: root / f"jmp_{task}.pt" for task in ("oc20", "none")}
    for task, path in paths.items():
        convert_jmp(JMP_CHECKPOINT, path, task=task)
    return paths


def test_block_relevance_tool_runs_on_the_converted_checkpoint(jmp, emt_lmdb, tmp_path):
    out = tmp_path / "rel.json"
    result = subprocess.run([sys.executable, str(REPO / "tools" / "block_relevance.py"), "--checkpoint", str(jmp["oc20"]),
                             "--data", str(emt_lmdb["val"]), "--num-samples", "4", "--batch-size", "2", "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads(out.read_text())
    assert scores["blocks"] == ["f_1", "f_2", "f_3", "f_4"]  # embedding + 3 interaction blocks
    entry = scores["datasets"]["val"]
    for branch in ("energy", "forces", "combined"):
        assert sum(entry[branch]) == pytest.approx(1.0) and min(entry[branch]) >= 0


def test_distillation_of_a_sliced_student_from_the_converted_teacher(jmp, emt_lmdb, tmp_path):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    log = fairchem(*distill_command("distill_2b.yml", jmp["oc20"], emt_lmdb, tmp_path, "kd",
                                    "--task.distill.max_samples=96", "--optim.batch_size=4",
                                    "--optim.lr_initial=0.002", "--optim.eval_every=24"), cwd=tmp_path)
    losses = logged(log, "distill_loss")
    assert len(losses) == 24 and np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    student = tmp_path / "checkpoints" / "kd" / "checkpoint.pt"
    model = torch.load(student, weights_only=False)["config"]["model"]
    assert model["num_blocks"] == 2 and model["source_blocks"] == [0, 1]
    # the student keeps JMP's architecture: head, basis scale, offset sign, tags
    assert (model["num_mlps"], model["absolute_rbf_cutoff"], model["cell_offset_convention"], model["qint_tags"]) == \
        (5, 12.0, "jmp", [1, 2])
    atoms = molecule_atoms()
    atoms.set_tags([2] * len(atoms))
    atoms.calc = OCPCalculator(checkpoint_path=str(student), cpu=True, seed=0)
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()


def test_shipped_finetune_config_trains_one_epoch_from_the_converted_backbone(jmp, tmp_path):
    data = rmd17_lmdbs(tmp_path)
    config = REPO / "configs" / "finetune" / "rmd17_aspirin_2b.yml"
    args = [f"--model.pretrained_checkpoint={jmp['none']}", "--optim.batch_size=4", "--optim.eval_batch_size=4",
            "--optim.num_workers=0", *(f"--dataset.{s}.src={data / s}" for s in ("train", "val", "test"))]
    log = fairchem("--mode", "train", "--config-yml", config, "--cpu", "--run-dir", tmp_path, "--timestamp-id", "ft",
                   "--print-every", "1", "--optim.max_epochs=1", *args, cwd=tmp_path)
    assert "Loaded GemNetOCReduced" in log
    losses = logged(log, "loss")
    assert len(losses) == 4 and np.isfinite(losses).all()
    checkpoint = torch.load(tmp_path / "checkpoints" / "ft" / "checkpoint.pt", weights_only=False)
    model = checkpoint["config"]["model"]
    assert model["num_blocks_kept"] == 2 and model["cutoff"] == 7.0 and model["max_neighbors"] == 100
    assert not model["direct_forces"] and model["regress_forces"]  # gradient forces, as JMP fine-tunes MD
    converted = torch.load(jmp["none"], weights_only=False)["state_dict"]
    weights = {k.removeprefix("module."): v for k, v in checkpoint["state_dict"].items()}
    assert [k for k in weights if k.startswith("out_energy.")] == [f"out_energy.{i}.{p}" for i in (0, 2, 4, 6) for p in
                                                                    ("weight", "bias")] + ["out_energy.8.weight"]
    assert "out_forces.0.weight" not in weights  # no direct-force branch
    # the backbone came from the converted checkpoint (moved by one epoch at a small rate), the head is fresh
    assert (weights["atom_emb.embeddings.weight"] - converted["atom_emb.embeddings.weight"]).abs().max() < 1e-2
    assert (weights["out_energy.0.weight"] - converted["out_energy.0.weight"]).abs().max() > 1e-2


def test_molecules_without_jmp_tags_are_one_error_line_before_training(jmp, tmp_path):
    """Through the stock fairchem command, with the converted checkpoint's reading of untagged structures
    turned off (``untagged_tag: None``; tests/test_jmp.py has it on): one line, exit status 2, no training step."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb

    frames = []
    for i in range(4):
        atoms = molecule_atoms()
        atoms.rattle(0.05, seed=i)
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 - i, forces=np.zeros((len(atoms), 3)))
        frames.append(atoms)
    for split in ("train", "val", "test"):
        write_lmdb(tmp_path / split / "data.lmdb", (atoms_to_data(a, i) for i, a in enumerate(frames)))  # tags 0
    config = REPO / "configs" / "finetune" / "rmd17_aspirin_2b.yml"
    result = subprocess.run(
        [str(FAIRCHEM), "--mode", "train", "--config-yml", str(config), "--cpu", "--run-dir", str(tmp_path),
         "--timestamp-id", "ft", f"--model.pretrained_checkpoint={jmp['none']}", "--model.untagged_tag=None",
         "--optim.num_workers=0",
         f"--dataset.train.src={tmp_path / 'train'}", f"--dataset.val.src={tmp_path / 'val'}",
         f"--dataset.test.src={tmp_path / 'test'}"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the structures have atom tags [0] but the model's quadruplet interactions need "
                           "atoms tagged qint_tags [1, 2]"), last
    assert "Traceback" not in result.stderr
    assert not logged(result.stdout + result.stderr, "loss")  # no training step ran


def test_fairchem_predict_with_the_converted_checkpoint_gives_jmps_energies(jmp, tmp_path):
    """``fairchem --mode predict --checkpoint OUT`` with the config stored in OUT, on JMP's 12 Å systems."""
    import yaml
    from ase.calculators.singlepoint import SinglePointCalculator
    from test_jmp import META, REFERENCE, SYSTEMS, atoms_of

    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb

    names = [name for name, system in SYSTEMS.items() if system["cutoff_all_graphs"] == 12.0]
    structures = []
    for name in names:
        atoms = atoms_of(name)
        atoms.calc = SinglePointCalculator(atoms, energy=0.0, forces=np.zeros((len(atoms), 3)))
        structures.append(atoms)
    write_lmdb(tmp_path / "test" / "data.lmdb", (atoms_to_data(a, i) for i, a in enumerate(structures)))
    config = torch.load(jmp["oc20"], weights_only=False)["config"]
    config["dataset"] = {"test": {"format": "lmdb", "src": str(tmp_path / "test")}}
    (tmp_path / "predict.yml").write_text(yaml.safe_dump(config))
    fairchem("--mode", "predict", "--config-yml", tmp_path / "predict.yml", "--checkpoint", jmp["oc20"], "--cpu",
             "--run-dir", tmp_path, "--timestamp-id", "p", cwd=tmp_path)
    predictions = np.load(tmp_path / "results" / "p" / "ocp_predictions.npz")
    energies = dict(zip((int(i.split("_")[0]) for i in predictions["ids"]), predictions["energy"].reshape(-1)))
    for i, name in enumerate(names):
        expected = REFERENCE[f"ema__{name}__energy"][0] * META["normalization_std"]["oc20"]["y"]
        assert abs(energies[i] - expected) / abs(expected) <= 1e-4, name
