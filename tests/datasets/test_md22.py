"""MD22 .npz -> fairchem LMDBs: JMP's training sizes per molecule, 95/5 train/val, the rest test."""

import numpy as np
import pytest
from dataset_helpers import KCAL_MOL_EV, position_key, read_splits

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.datasets.md22 import molecule_name
from fairchem_prune.errors import PruneError


def write_md22(path, frames, name, seed=0):
    """An MD22 file as distributed by sGDML: ``E`` has shape (frames, 1)."""
    rng = np.random.default_rng(seed)
    arrays = dict(z=np.array([6, 6, 1, 1, 1, 1]), R=rng.normal(0.0, 1.5, (frames, 6, 3)),
                  E=rng.normal(-600_000.0, 3.0, (frames, 1)), F=rng.normal(0.0, 30.0, (frames, 6, 3)),
                  name=np.array(name), theory=np.array("PBE+MBD"), e_unit=np.array("kcal/mol"), r_unit=np.array("Ang"))
    np.savez(path, **arrays)
    return arrays


def test_buckyball_catcher_uses_jmp_size(tmp_path):
    raw = write_md22(tmp_path / "md22_buckyball-catcher.npz", 640, "buckyball-catcher")
    sizes = prepare_dataset("md22", tmp_path / "md22_buckyball-catcher.npz", tmp_path / "out")
    assert sizes == {"train": 570, "val": 30, "test": 40}  # 600 training frames, 5 % of them val
    splits = read_splits(tmp_path / "out")
    assert sorted(int(d.sid) for entries in splits.values() for d in entries) == list(range(640))
    assert {position_key(d.pos) for e in splits.values() for d in e} == {position_key(r.astype(np.float32)) for r in raw["R"]}
    d = splits["val"][3]
    assert d.energy == pytest.approx(raw["E"][int(d.sid), 0] * KCAL_MOL_EV, rel=1e-7)
    np.testing.assert_allclose(d.forces.numpy(), raw["F"][int(d.sid)] * KCAL_MOL_EV, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("file, name, expected", [
    ("md22_AT-AT-CG-CG.npz", "AT-AT-CG-CG", "AT-AT-CG-CG"),
    ("md22_AT-AT.npz", "AT-AT", "AT-AT"),
    ("md22_double-walled_nanotube.npz", "", "double-walled_nanotube"),
    ("md22_Ac-Ala3-NHMe.npz", "Ac-Ala3-NHMe", "Ac-Ala3-NHMe"),
    ("mine.npz", "mine", None),
])
def test_molecule_names(tmp_path, file, name, expected):
    write_md22(tmp_path / file, 2, name)
    assert molecule_name(tmp_path / file) == expected


def test_unknown_molecule_needs_sizes(tmp_path):
    write_md22(tmp_path / "mine.npz", 50, "mine")
    with pytest.raises(PruneError, match="pass --train-size and --val-size"):
        prepare_dataset("md22", tmp_path / "mine.npz", tmp_path / "out")
    assert prepare_dataset("md22", tmp_path / "mine.npz", tmp_path / "out", train_size=30, val_size=5) == \
        {"train": 30, "val": 5, "test": 15}
