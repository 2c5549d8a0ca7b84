"""Shared fixtures of the fairchem-core 2.x suite (run from .venv-fairchem2: ``pytest tests_fairchem2``).

``fixtures/uma/`` is a tiny UMA-architecture checkpoint (6 blocks, 4 experts, MoLE energy head, raw and
EMA weights) made and run with fairchem-core 2.24's own code, two reduced checkpoints made by hand
surgery, and the outputs of ``FAIRChemCalculator`` on 9 systems and 5 tasks (see its README)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the helpers both suites share
from slurm_cluster import pytest_collection_modifyitems  # noqa: E402, F401  (the slurm marker's skip)

FIXTURES = Path(__file__).parent / "fixtures" / "uma"
UMA_TINY = FIXTURES / "uma_tiny.pt"
#: hand-made reduced checkpoints: name in reference.npz -> (file, blocks of the full model)
REDUCED = {"first4": (FIXTURES / "uma_tiny_first4.pt", [0, 1, 2, 3]),
           "blocks0135": (FIXTURES / "uma_tiny_blocks0135.pt", [0, 1, 3, 5])}
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "configs" / "fairchem2" / "uma_finetune"
TEMPLATE = "uma_sm_finetune_template.yaml"

torch.set_num_threads(1)  # the references were made with one thread


@pytest.fixture(scope="session")
def reference():
    return dict(np.load(FIXTURES / "reference.npz"))


def systems(reference) -> list[str]:
    return [str(s) for s in reference["systems"]]


def system_atoms(reference, name: str) -> tuple[Atoms, str]:
    """The fixture's system ``name`` as ASE atoms (charge and spin in ``info``) and its task."""
    z = reference
    atoms = Atoms(numbers=z[f"{name}__numbers"], positions=z[f"{name}__positions"], cell=z[f"{name}__cell"],
                  pbc=z[f"{name}__pbc"])
    atoms.info.update(charge=int(z[f"{name}__charge"]), spin=int(z[f"{name}__spin"]))
    return atoms, str(z[f"{name}__task"])


def cli(*args, cwd, check: bool = True) -> subprocess.CompletedProcess:
    """``fairchem-prune ARGS`` of this environment (one thread), its completed process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / "fairchem-prune"), *map(str, args)], capture_output=True, text=True,
                            cwd=cwd, env=env)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def emt_structures(n: int, seed: int):
    """``n`` rattled, strained fcc Cu / Ni / Al cells (4 atoms) with EMT energies (eV) and forces (eV/A)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    structures = []
    for i in range(n):
        element = ["Cu", "Ni", "Al"][i % 3]
        atoms = bulk(element, "fcc", a={"Cu": 3.61, "Ni": 3.52, "Al": 4.05}[element], cubic=True)
        atoms.set_cell(atoms.cell * (1 + rng.normal(0, 0.01, (3, 3))), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        structures.append(atoms)
    return structures


def uma_template(root: Path, sizes: tuple[int, int], seeds: tuple[int, int]) -> Path:
    """What ``create_uma_finetune_dataset.py --uma-task omat --regression-tasks ef --output-dir <root>/ft``
    writes for ``sizes`` train / val EMT structures (``seeds``): ``ft/train``, ``ft/val`` (ASE-LMDB), the
    data YAML and the template; returns ``ft``."""
    from ase.io import write
    from fairchem.core.scripts import create_uma_finetune_dataset as script
    from fairchem.core.scripts.create_finetune_dataset import (
        compute_normalizer_and_linear_reference,
        launch_processing,
    )

    for split, n, seed in (("train", sizes[0], seeds[0]), ("val", sizes[1], seeds[1])):
        (root / "raw" / split).mkdir(parents=True)
        write(root / "raw" / split / "structures.extxyz", emt_structures(n, seed))
    out = root / "ft"
    launch_processing(str(root / "raw" / "train"), out / "train", 1)
    force_rms, linref = compute_normalizer_and_linear_reference(out / "train", 1)
    launch_processing(str(root / "raw" / "val"), out / "val", 1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(script, "TEMPLATE_DIR", TEMPLATES)
        script.create_yaml(train_path=str(out / "train"), val_path=str(out / "val"), force_rms=float(force_rms),
                           linref_coeff=linref, output_dir=out, dataset_name="omat", regression_tasks="ef",
                           base_model_name="uma-s-1p1")
    assert (out / TEMPLATE).is_file() and (out / "data" / "uma_conserving_data_task_energy_force.yaml").is_file()
    return out


@pytest.fixture(scope="session")
def ft(tmp_path_factory) -> Path:
    """The fine-tuning task: :func:`uma_template` of 16 train / 4 val EMT structures."""
    return uma_template(tmp_path_factory.mktemp("finetune"), (16, 4), (0, 1))


@pytest.fixture(scope="session")
def pretrain(tmp_path_factory) -> Path:
    """Distillation structures: :func:`uma_template` of 16 / 4 other EMT structures."""
    return uma_template(tmp_path_factory.mktemp("pretrain"), (16, 4), (2, 3))


@pytest.fixture(scope="session")
def sliced(tmp_path_factory) -> Path:
    """uma_tiny.pt (6 blocks) sliced to blocks 0, 1, 3, 5."""
    from fairchem_prune.fairchem2.slicing import slice_inference_checkpoint

    path = tmp_path_factory.mktemp("sliced") / "uma_4b.pt"
    slice_inference_checkpoint(UMA_TINY, path, kept_blocks=[0, 1, 3, 5])
    return path


def predictions(checkpoint: Path, structures) -> tuple[np.ndarray, np.ndarray, int]:
    """Energies (eV), forces (eV/A) of ``structures`` by ``load_predict_unit`` (task omat), number of blocks."""
    from fairchem.core import FAIRChemCalculator
    from fairchem.core.units.mlip_unit import load_predict_unit

    unit = load_predict_unit(str(checkpoint), inference_settings="batch", device="cpu")
    energies, forces = [], []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = FAIRChemCalculator(unit, task_name="omat")
        energies.append(atoms.get_potential_energy())
        forces.append(atoms.get_forces())
    return np.array(energies), np.concatenate(forces), len(getattr(unit.model, "module", unit.model).backbone.blocks)


def fairchem(config: Path, log: Path, cwd: Path) -> subprocess.CompletedProcess:
    with log.open("w") as handle:
        return subprocess.run([str(BIN / "fairchem"), "-c", str(config)], stdout=handle, stderr=subprocess.STDOUT,
                              cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
