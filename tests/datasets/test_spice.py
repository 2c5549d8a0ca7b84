"""SPICE HDF5 -> fairchem LMDBs: one subset, bohr -> Å, hartree -> eV, forces = -gradient, 80/10/10."""

import h5py
import numpy as np
import pytest
from dataset_helpers import BOHR_ANGSTROM, HARTREE_EV, read_splits

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.errors import PruneError

AMINO_ACIDS = "SPICE Solvated Amino Acids Single Points Dataset v1.1"
DIPEPTIDES = "SPICE Dipeptides Single Points Dataset v1.2"
PUBCHEM = "SPICE PubChem Set 1 Single Points Dataset v1.2"


def write_spice(path, molecules):
    """Groups laid out as in SPICE-1.1.x's SPICE.hdf5: ``molecules`` is [(name, subset, numbers, count)]."""
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as h5:
        for name, subset, numbers, count in molecules:
            group = h5.create_group(name)
            group["atomic_numbers"] = np.array(numbers, dtype=np.int16)
            group["conformations"] = rng.normal(0.0, 3.0, (count, len(numbers), 3)).astype(np.float32)
            group["dft_total_energy"] = rng.normal(-500.0, 0.01, count)
            group["formation_energy"] = rng.normal(-1.5, 0.01, count)
            group["dft_total_gradient"] = rng.normal(0.0, 0.02, (count, len(numbers), 3)).astype(np.float32)
            group["smiles"] = np.array([b"[H]O[H]"])
            group["subset"] = np.array([subset.encode()])


def test_amino_acids_subset_units_and_split(tmp_path):
    write_spice(tmp_path / "SPICE.hdf5", [
        ("[NH3+][C@@H](C)C(=O)[O-]", AMINO_ACIDS, [7, 6, 6, 8, 1], 12),
        ("gly water", AMINO_ACIDS, [7, 6, 8, 8, 1, 1], 8),
        ("ala-ala", DIPEPTIDES, [6, 7, 8], 5),
        ("103915", PUBCHEM, [6, 1], 7),
    ])
    sizes = prepare_dataset("spice", tmp_path / "SPICE.hdf5", tmp_path / "aa")
    assert sizes == {"train": 16, "val": 2, "test": 2}
    splits = read_splits(tmp_path / "aa")
    entries = [d for e in splits.values() for d in e]
    assert sorted(int(d.sid) for d in entries) == list(range(20))

    with h5py.File(tmp_path / "SPICE.hdf5") as h5:
        expected = []
        for name in sorted(["[NH3+][C@@H](C)C(=O)[O-]", "gly water"]):  # groups are read in sorted order
            g = h5[name]
            for i in range(len(g["conformations"])):
                expected.append((g["atomic_numbers"][()], g["conformations"][i], g["formation_energy"][i],
                                 g["dft_total_gradient"][i]))
    for d in entries:
        numbers, bohr, energy, gradient = expected[int(d.sid)]
        assert d.atomic_numbers.tolist() == numbers.tolist()
        np.testing.assert_allclose(d.pos.numpy(), bohr * BOHR_ANGSTROM, rtol=1e-6, atol=1e-6)
        assert d.energy == pytest.approx(energy * HARTREE_EV, rel=1e-7)
        np.testing.assert_allclose(d.forces.numpy(), -gradient * HARTREE_EV / BOHR_ANGSTROM, rtol=1e-5, atol=1e-6)

    sizes = prepare_dataset("spice", tmp_path / "SPICE.hdf5", tmp_path / "dp", subset="dipeptides",
                            target="dft_total_energy", train_size=3, val_size=1)
    assert sizes == {"train": 3, "val": 1, "test": 1}
    d = read_splits(tmp_path / "dp")["test"][0]
    with h5py.File(tmp_path / "SPICE.hdf5") as h5:
        assert d.energy == pytest.approx(h5["ala-ala"]["dft_total_energy"][int(d.sid)] * HARTREE_EV, rel=1e-7)  # ASE: CODATA 2014


def test_missing_gradient_is_an_error(tmp_path):
    write_spice(tmp_path / "SPICE.hdf5", [("gly", AMINO_ACIDS, [7, 6], 10)])
    with h5py.File(tmp_path / "SPICE.hdf5", "a") as h5:
        del h5["gly"]["dft_total_gradient"]
    with pytest.raises(PruneError, match=r"SPICE.hdf5:gly: key 'dft_total_gradient' is missing"):
        prepare_dataset("spice", tmp_path / "SPICE.hdf5", tmp_path / "out")
