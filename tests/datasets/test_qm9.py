"""QM9 dsgdb9nsd_*.xyz (folder or .tar.bz2) -> fairchem LMDBs: one target, hartree -> eV."""

import tarfile

import pytest
from dataset_helpers import HARTREE_EV, position_key, read_splits

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.errors import PruneError

# methane as in dsgdb9nsd_000001.xyz: 17 fields on line 2 (trailing tab), Mulliken charges, frequencies,
# SMILES and InChI lines
METHANE = """5
gdb {id}\t157.7118\t157.70997\t157.70699\t0.\t13.21\t-0.3877\t0.1171\t0.5048\t35.3641\t0.044749\t{u0}\t-40.476062\t-40.475117\t-40.498597\t6.469\t
C\t-0.0126981359\t 1.0858041578\t {z}\t-0.535689
H\t 0.002150416\t-0.0060313176\t 0.0019761204\t 0.133921
H\t 1.0117308433\t 1.4637511618\t 0.0002765748\t 0.133922
H\t-0.540815069\t 1.4475266138\t-0.8766437152\t 0.133923
H\t-0.5238136345\t 1.4379326443\t 0.9063972942\t 0.133923
1341.307\t1341.3284\t1341.365\t1562.6731\t1562.7453\t3038.3205\t3151.6034\t3151.6788\t3151.7078
C\tC\t
InChI=1S/CH4/h1H4\tInChI=1S/CH4/h1H4
"""


def write_qm9(folder, count):
    """``count`` methane-like files; U0 and one coordinate vary, some written with ``*^`` exponents.
    Returns {gdb id: (U0 hartree, z coordinate Å)}."""
    folder.mkdir()
    values = {}
    for i in range(1, count + 1):
        u0, z = -40.47893 - 0.001 * i, 0.0080009958 if i % 2 else 3.2e-6 * i
        z_text = f"{z:.4e}".replace("e", "*^") if i % 2 == 0 else repr(z)
        (folder / f"dsgdb9nsd_{i:06d}.xyz").write_text(METHANE.format(id=i, u0=repr(u0), z=z_text))
        values[i] = (u0, z)
    return values


@pytest.fixture
def qm9_raw(tmp_path):
    values = write_qm9(tmp_path / "qm9", 24)
    with tarfile.open(tmp_path / "dsgdb9nsd.xyz.tar.bz2", "w:bz2") as tar:
        for file in sorted((tmp_path / "qm9").iterdir(), reverse=True):  # archive order != name order
            tar.add(file, arcname=file.name)
    return tmp_path, values


def test_u0_in_ev_split_and_tar_equals_folder(qm9_raw):
    tmp, values = qm9_raw
    sizes = prepare_dataset("qm9", tmp / "qm9", tmp / "folder", val_size=4, test_size=5)
    assert sizes == {"train": 15, "val": 4, "test": 5}
    splits = read_splits(tmp / "folder")
    entries = [d for e in splits.values() for d in e]
    assert sorted(int(d.sid) for d in entries) == list(range(24))  # sid: index in the sorted file list
    for d in entries:
        u0, z = values[int(d.sid) + 1]
        assert d.energy == pytest.approx(u0 * HARTREE_EV, rel=1e-7)
        assert d.pos[0, 2].item() == pytest.approx(z, abs=1e-7)
        assert d.atomic_numbers.tolist() == [6, 1, 1, 1, 1] and "forces" not in d

    prepare_dataset("qm9", tmp / "dsgdb9nsd.xyz.tar.bz2", tmp / "tar", val_size=4, test_size=5)
    from_tar = read_splits(tmp / "tar")
    for name, part in splits.items():
        assert [(int(d.sid), d.energy, position_key(d.pos)) for d in part] == \
            [(int(d.sid), d.energy, position_key(d.pos)) for d in from_tar[name]]


def test_non_energy_target_keeps_units(qm9_raw):
    tmp, _ = qm9_raw
    prepare_dataset("qm9", tmp / "qm9", tmp / "mu", target="mu", val_size=4, test_size=4)
    assert {d.energy for d in read_splits(tmp / "mu")["train"]} == {0.0}
    prepare_dataset("qm9", tmp / "qm9", tmp / "gap", target="gap", val_size=4, test_size=4)
    assert [d.energy for d in read_splits(tmp / "gap")["val"]] == pytest.approx([0.5048 * HARTREE_EV] * 4)


def test_default_split_needs_20000_molecules_and_bad_line_2(qm9_raw):
    tmp, _ = qm9_raw
    with pytest.raises(PruneError, match="holds 24 structures, too few for the split \\(train rest, val 10000"):
        prepare_dataset("qm9", tmp / "qm9", tmp / "out")
    bad = tmp / "qm9" / "dsgdb9nsd_000007.xyz"
    lines = bad.read_text().splitlines()
    lines[1] = "\t".join(lines[1].split()[:16])
    bad.write_text("\n".join(lines))
    with pytest.raises(PruneError, match="dsgdb9nsd_000007.xyz: line 2 has 16 fields, expected 17"):
        prepare_dataset("qm9", tmp / "qm9", tmp / "out", val_size=4, test_size=4)
