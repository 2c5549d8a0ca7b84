"""QMOF qmof.json + qmof_structure_data.json -> periodic fairchem LMDBs with the PBE band gap."""

import json

import numpy as np
import pytest
from dataset_helpers import read_splits
from pymatgen.core import Lattice, Structure

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.errors import PruneError


def write_qmof(folder, count):
    """The two QMOF JSON files; structures are pymatgen ``Structure.as_dict()`` as in the release."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    entries, structures = [], []
    for i in range(count):
        qmof_id = f"qmof-{1000 + i:07d}"
        lattice = Lattice.from_parameters(*rng.uniform(6, 9, 3), *rng.uniform(80, 100, 3))
        structure = Structure(lattice, ["Zn", "O", "C", "H"], rng.uniform(0, 1, (4, 3)))
        gap = float(rng.uniform(0.5, 4.0))
        entries.append({"qmof_id": qmof_id, "name": f"MOF{i}", "info": {"formula": "ZnOCH", "natoms": 4},
                        "outputs": {"pbe": {"energy_total": -30.0 - i, "bandgap": gap, "cbm": 1.0, "vbm": 1.0 - gap,
                                            "directgap": False}, "hse06": {"bandgap": None}}})
        structures.append({"qmof_id": qmof_id, "name": f"MOF{i}", "structure": structure.as_dict()})
    (folder / "qmof.json").write_text(json.dumps(entries))
    (folder / "qmof_structure_data.json").write_text(json.dumps(structures))
    return entries, structures


def test_band_gap_periodic_structures_split(tmp_path):
    entries, structures = write_qmof(tmp_path / "qmof", 10)
    assert prepare_dataset("qmof", tmp_path / "qmof" / "qmof.json", tmp_path / "out") == {"train": 8, "val": 1, "test": 1}
    data = [d for e in read_splits(tmp_path / "out").values() for d in e]
    assert sorted(int(d.sid) for d in data) == list(range(10))
    for d in data:
        structure = Structure.from_dict(structures[int(d.sid)]["structure"])
        assert d.energy == pytest.approx(entries[int(d.sid)]["outputs"]["pbe"]["bandgap"], rel=1e-12)
        np.testing.assert_allclose(d.cell[0].numpy(), structure.lattice.matrix, atol=1e-5)
        np.testing.assert_allclose(d.pos.numpy(), structure.cart_coords, atol=1e-4)
        assert d.pbc.all() and d.atomic_numbers.tolist() == [30, 8, 6, 1]


def test_missing_target_or_structure(tmp_path):
    write_qmof(tmp_path / "qmof", 4)
    with pytest.raises(PruneError, match="qmof-0001000 has no 'outputs.hse06.bandgap'"):
        prepare_dataset("qmof", tmp_path / "qmof", tmp_path / "out", target="outputs.hse06.bandgap")
    structures = json.loads((tmp_path / "qmof" / "qmof_structure_data.json").read_text())
    (tmp_path / "qmof" / "qmof_structure_data.json").write_text(json.dumps(structures[1:]))
    with pytest.raises(PruneError, match="qmof_structure_data.json: no 'structure' for qmof_id 'qmof-0001000'"):
        prepare_dataset("qmof", tmp_path / "qmof", tmp_path / "out")
