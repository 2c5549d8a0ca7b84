"""Any ASE-readable file -> fairchem LMDBs: energy (+ forces) or an info key as target, 80/10/10."""

import ase.io
import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from dataset_helpers import position_key, read_splits

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.errors import PruneError


def structures(count):
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
        atoms.info["homo"] = -7.0 - 0.01 * i
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0 - 0.1 * i, forces=rng.normal(0, 1, (3, 3)))
        out.append(atoms)
    return out


@pytest.mark.parametrize("suffix", ["extxyz", "traj", "db"])
def test_energy_and_forces(tmp_path, suffix):
    frames = structures(20)
    ase.io.write(tmp_path / f"mine.{suffix}", frames)
    assert prepare_dataset("ase", tmp_path / f"mine.{suffix}", tmp_path / "out") == {"train": 16, "val": 2, "test": 2}
    data = [d for e in read_splits(tmp_path / "out").values() for d in e]
    assert {position_key(d.pos) for d in data} == {position_key(a.positions.astype(np.float32)) for a in frames}
    for d in data:
        atoms = frames[int(d.sid)]
        assert d.energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(d.forces.numpy(), atoms.get_forces(), rtol=1e-6, atol=1e-7)


def test_info_key_target_and_missing_key(tmp_path):
    ase.io.write(tmp_path / "mine.extxyz", structures(10))
    prepare_dataset("ase", tmp_path / "mine.extxyz", tmp_path / "out", target="homo")
    data = [d for e in read_splits(tmp_path / "out").values() for d in e]
    assert sorted(d.energy for d in data) == pytest.approx(sorted(-7.0 - 0.01 * i for i in range(10)))
    assert all("forces" not in d for d in data)
    with pytest.raises(PruneError, match="mine.extxyz: structure 0 has no info key 'lumo'"):
        prepare_dataset("ase", tmp_path / "mine.extxyz", tmp_path / "other", target="lumo")


def test_untagged_structures_get_jmp_tag_2_and_tagged_ones_keep_theirs(tmp_path):
    from ase.build import add_adsorbate, fcc111

    slabs = []
    for i in range(10):
        slab = fcc111("Cu", size=(2, 2, 2), vacuum=5.0)
        add_adsorbate(slab, "O", 1.8, "fcc")
        slab.set_tags([0] * 4 + [1] * 4 + [2])
        slab.calc = SinglePointCalculator(slab, energy=-1.0 * i)
        slabs.append(slab)
    ase.io.write(tmp_path / "slabs.extxyz", slabs)
    ase.io.write(tmp_path / "mols.extxyz", structures(10))
    prepare_dataset("ase", tmp_path / "slabs.extxyz", tmp_path / "slabs")
    prepare_dataset("ase", tmp_path / "mols.extxyz", tmp_path / "mols")
    assert all(d.tags.tolist() == [0] * 4 + [1] * 4 + [2] for e in read_splits(tmp_path / "slabs").values() for d in e)
    assert all(d.tags.tolist() == [2, 2, 2] for e in read_splits(tmp_path / "mols").values() for d in e)
