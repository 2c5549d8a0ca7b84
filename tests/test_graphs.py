"""Batches mixing molecules and slabs (issue: fairchem reads the first structure's pbc flags only): a
teacher whose config lacks ``use_pbc_single`` gives, inside the distill trainer and in the evaluation that
relevance and scoring use, what ``OCPCalculator`` gives one structure at a time."""

import numpy as np
import pytest
import torch
from conftest import TINY_GEMNET, build_perturbed, molecule_atoms, slab_atoms, to_batch, write_checkpoint
from trainers.distill_helpers import build_trainer, distill_command

from fairchem_prune.errors import PruneError
from fairchem_prune.graphs import build_graphs_per_structure, mixes_periodicity

#: a stock GemNet-OC config as a model trained on one kind of system has it: no use_pbc_single
TEACHER_MODEL = {**TINY_GEMNET, "name": "gemnet_oc", "num_blocks": 4}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    assert "use_pbc_single" not in TEACHER_MODEL
    path = tmp_path_factory.mktemp("graphs") / "teacher.pt"
    write_checkpoint(path, build_perturbed(TEACHER_MODEL, seed=2), TEACHER_MODEL)
    return path


def calculator_outputs(checkpoint, atoms_list) -> list[tuple[float, np.ndarray]]:
    """(energy, forces) of each structure alone, through fairchem's ASE calculator."""
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    calc = OCPCalculator(checkpoint_path=str(checkpoint), cpu=True, seed=0)
    results = []
    for atoms in atoms_list:
        atoms = atoms.copy()
        atoms.calc = calc
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    return results


def mixed():
    return [molecule_atoms(), slab_atoms()]


def test_mixed_batches_are_recognised():
    assert mixes_periodicity(to_batch(mixed()))
    assert not mixes_periodicity(to_batch([slab_atoms(), slab_atoms()]))
    assert not mixes_periodicity(to_batch([molecule_atoms()]))


def test_distill_teacher_sees_each_structure_as_the_calculator_does(teacher, emt_lmdb, tmp_path):
    trainer = build_trainer(distill_command("distill_2b.yml", teacher, emt_lmdb, tmp_path, "x"))
    assert trainer.normalizers == {} and trainer.elementrefs == {}  # as the teacher: none, nothing fitted
    batch = to_batch(mixed())
    expected = calculator_outputs(teacher, mixed())

    def teacher_outputs():
        trainer._forward(batch.clone())
        out = trainer._step["teacher_out"]
        energy = trainer._denorm_preds("energy", out["energy"], batch).flatten()
        forces = trainer._denorm_preds("forces", out["forces"], batch)
        return energy, torch.split(forces, batch.natoms.tolist())

    energy, forces = teacher_outputs()
    for i, (e, f) in enumerate(expected):
        assert energy[i].item() == pytest.approx(e, rel=1e-5, abs=1e-5), i
        np.testing.assert_allclose(forces[i].numpy(), f, rtol=1e-4, atol=1e-5)
    # the defect this guards against: one periodic setting per batch, read from the molecule in front
    build_graphs_per_structure(trainer.teacher, False)
    energy, _ = teacher_outputs()
    assert abs(energy[1].item() - expected[1][0]) > 1e-3


def test_a_student_that_would_mix_periodicity_is_refused(teacher, emt_lmdb, tmp_path):
    trainer = build_trainer(distill_command("distill_2b.yml", teacher, emt_lmdb, tmp_path, "x",
                                            "--model.use_pbc_single=False"))
    trainer._forward(to_batch([slab_atoms(), slab_atoms()]))  # one kind of structure: fine
    with pytest.raises(PruneError, match="mixes periodic and non-periodic structures.*model.use_pbc_single: true"):
        trainer._forward(to_batch(mixed()))


def test_scoring_a_mixed_lmdb_equals_the_calculator(teacher, tmp_path):
    """evaluate_checkpoint (the demo's tables; relevance loads the model the same way) on one LMDB
    holding a molecule and a slab, in one batch: the force MAE of the calculator's one-at-a-time forces."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb
    from fairchem_prune.evaluation import evaluate_checkpoint

    structures = mixed()
    labels = [np.random.default_rng(i).normal(size=(len(a), 3)) for i, a in enumerate(structures)]
    for atoms, forces in zip(structures, labels):
        atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=forces)
    write_lmdb(tmp_path / "mixed.lmdb", (atoms_to_data(a, i) for i, a in enumerate(structures)))
    metrics = evaluate_checkpoint(teacher, tmp_path / "mixed.lmdb", batch_size=2)
    predicted = calculator_outputs(teacher, mixed())  # no fixed atoms: every atom is scored
    errors = np.concatenate([np.abs(f - label).ravel() for (_, f), label in zip(predicted, labels)])
    assert metrics["forces_mae"] == pytest.approx(float(errors.mean()), rel=1e-4)
