"""fairchem_prune.evaluation (the demo's Table 1 and its leaderboard view): on slabs whose labels are a
checkpoint's own predictions shifted by chosen amounts, EFwT counts exactly the structures within
0.02 eV and 0.03 eV/Å on every free atom, and the force MAE is that of the free atoms' shifts."""

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from conftest import build_perturbed, slab_atoms, tiny_config, write_checkpoint

#: (energy shift eV, largest force shift on a free atom eV/Å, force shift on a fixed atom eV/Å, within EFwT)
SHIFTS = [(0.010, 0.020, 0.0, True), (0.030, 0.000, 0.0, False), (0.000, 0.040, 0.0, False),
          (-0.015, 0.025, 0.0, True), (0.000, 0.000, 1.0, True), (0.019, -0.010, 0.0, True)]


def slabs() -> list:
    """Cu(111) 2x2x3 slabs with O, rattled differently, the bottom layer fixed."""
    structures = []
    for seed in range(len(SHIFTS)):
        atoms = slab_atoms()
        atoms.rattle(0.03, seed=10 + seed)
        atoms.set_constraint(FixAtoms(indices=[a.index for a in atoms if a.tag == 3]))
        structures.append(atoms)
    return structures


def test_efwt_counts_the_structures_within_both_thresholds_on_the_free_atoms(tmp_path):
    from fairchem.core.common.relaxation.ase_utils import OCPCalculator

    from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb
    from fairchem_prune.evaluation import evaluate_checkpoint

    config = {"name": "gemnet_oc", **tiny_config(num_blocks=2)}
    write_checkpoint(tmp_path / "model.pt", build_perturbed(config, seed=4), config)
    calc = OCPCalculator(checkpoint_path=str(tmp_path / "model.pt"), cpu=True, seed=0)
    labelled, free_shifts = [], []
    for atoms, (de, df, dfixed, _) in zip(slabs(), SHIFTS):
        atoms.calc = calc
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        fixed = atoms.constraints[0].index
        assert len(fixed) == 4
        free = np.setdiff1d(np.arange(len(atoms)), fixed)
        shift = np.zeros_like(forces)
        shift[free[0], 1] = df                  # the largest shift on a free atom
        shift[free[1:], 0] = 0.5 * df           # smaller ones on the others
        shift[fixed, 2] = dfixed                # not scored: fixed
        free_shifts.append(np.abs(shift[free]))
        atoms.calc = SinglePointCalculator(atoms, energy=energy + de, forces=forces + shift)
        labelled.append(atoms)
    write_lmdb(tmp_path / "slabs.lmdb", (atoms_to_data(a, i) for i, a in enumerate(labelled)))
    metrics = evaluate_checkpoint(tmp_path / "model.pt", tmp_path / "slabs.lmdb", batch_size=4)
    assert metrics["energy_forces_within_threshold"] == pytest.approx(np.mean([s[3] for s in SHIFTS]))  # 4 / 6
    assert metrics["forces_mae"] == pytest.approx(float(np.concatenate(free_shifts).mean()), abs=2e-5)
    assert metrics["energy_mae"] == pytest.approx(float(np.mean([abs(s[0]) for s in SHIFTS])), abs=2e-5)
