"""Demo data: deterministic for a seed, xTB and EMT labels equal a fresh calculator call, raw files
go through the real converters."""

import pickle
from dataclasses import replace

import lmdb
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.emt import EMT

from fairchem_prune.cli import tool_main
from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.demo.generation import SIZES, DemoSize, make_demo_data, xtb_pool, xtb_single_point

TINY = DemoSize(g2_frames=2, slabs=6, rmd17_frames=6, md22_frames=3, qm9_conformers=2, g2_molecules=3)
LMDBS = [f"pretrain/{split}/{source}.lmdb" for split in ("train", "val") for source in ("xtb_molecules", "emt_slabs")]


def lmdb_content(path) -> list:
    """Every entry's fields as raw bytes (pickled torch tensors embed memory addresses, so the pickles
    themselves differ between runs)."""
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        entries = [pickle.loads(value) for _, value in txn.cursor()]
    env.close()
    return [sorted((key, value.numpy().tobytes() if hasattr(value, "numpy") else repr(value))
                   for key, value in (entry.to_dict().items() if hasattr(entry, "to_dict") else [("n", entry)]))
            for entry in entries]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    counts = make_demo_data(root / "a", TINY, seed=5)
    make_demo_data(root / "b", TINY, seed=5)
    make_demo_data(root / "c", TINY, seed=6)
    return root, counts


def test_counts_and_determinism(demo):
    root, counts = demo
    assert counts == {"pretrain/val/xtb_molecules": 1, "pretrain/train/xtb_molecules": 5, "pretrain/val/emt_slabs": 1,
                      "pretrain/train/emt_slabs": 5, "raw/rmd17_ethanol": 6, "raw/md22_adenine-thymine": 3, "raw/qm9": 6}
    for name in LMDBS:
        assert lmdb_content(root / "a" / name) == lmdb_content(root / "b" / name), name
    assert lmdb_content(root / "a" / LMDBS[0]) != lmdb_content(root / "c" / LMDBS[0])
    for name in ("rmd17_ethanol.npz", "md22_adenine-thymine.npz"):
        a, b = np.load(root / "a" / "raw" / name), np.load(root / "b" / "raw" / name)
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    files = sorted((root / "a" / "raw" / "qm9").iterdir())
    assert [f.read_bytes() for f in files] == [(root / "b" / "raw" / "qm9" / f.name).read_bytes() for f in files]


def test_pretraining_mix_does_not_depend_on_the_downstream_sizes(demo, tmp_path):
    """What lets the shipped teacher (trained on ``medium``'s mix) serve the ``standard`` data."""
    root, _ = demo
    make_demo_data(tmp_path, replace(TINY, rmd17_frames=9, md22_frames=5, qm9_conformers=3), seed=5)
    for name in LMDBS:
        assert lmdb_content(tmp_path / name) == lmdb_content(root / "a" / name), name
    assert np.load(tmp_path / "raw" / "rmd17_ethanol.npz")["coords"].shape[0] == 9
    assert SIZES["standard"] == replace(SIZES["medium"], rmd17_frames=SIZES["small"].rmd17_frames,
                                        md22_frames=SIZES["small"].md22_frames,
                                        qm9_conformers=SIZES["small"].qm9_conformers)


def test_labels_match_a_fresh_calculator(demo):
    root, _ = demo
    raw = np.load(root / "a" / "raw" / "rmd17_ethanol.npz")
    kcal = units.kcal / units.mol
    md22 = np.load(root / "a" / "raw" / "md22_adenine-thymine.npz")
    env = lmdb.open(str(root / "a" / "pretrain/train/xtb_molecules.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        molecule = pickle.loads(txn.get(b"1"))
    env.close()
    with xtb_pool(1) as pool:
        fresh = pool.submit(xtb_single_point, raw["nuclear_charges"], raw["coords"][3]).result()
        fresh22 = pool.submit(xtb_single_point, md22["z"], md22["R"][1]).result()
        fresh_mol = pool.submit(xtb_single_point, molecule.atomic_numbers.numpy(), molecule.pos.double().numpy()).result()
    # the LMDB keeps positions in float32: the labels belong to the float64 positions they were rounded from
    assert molecule.energy == pytest.approx(fresh_mol["energy"], abs=1e-4)
    np.testing.assert_allclose(molecule.forces.numpy(), fresh_mol["forces"], atol=1e-3)
    assert not molecule.pbc.any() and (molecule.tags == 2).all()  # JMP: tag 2 on every atom of a molecule
    assert raw["energies"][3] * kcal == pytest.approx(fresh["energy"], rel=1e-12)
    np.testing.assert_allclose(raw["forces"][3] * kcal, fresh["forces"], rtol=1e-10, atol=1e-12)
    assert md22["E"][1, 0] * kcal == pytest.approx(fresh22["energy"], rel=1e-12)
    assert str(md22["name"]) == "adenine-thymine" and md22["E"].shape == (3, 1)

    env = lmdb.open(str(root / "a" / "pretrain/train/emt_slabs.lmdb"), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        slab = pickle.loads(txn.get(b"2"))
    env.close()
    atoms = Atoms(numbers=slab.atomic_numbers.numpy(), positions=slab.pos.numpy(), cell=slab.cell[0].numpy(),
                  pbc=slab.pbc.numpy())
    atoms.calc = EMT()
    assert slab.energy == pytest.approx(atoms.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(slab.forces.numpy(), atoms.get_forces(), atol=1e-4)
    assert slab.pbc.tolist() == [True, True, False] and (slab.tags == 2).sum() == 1


def test_raw_files_convert_with_the_real_converters(demo, tmp_path):
    root, _ = demo
    raw = root / "a" / "raw"
    assert prepare_dataset("rmd17", raw / "rmd17_ethanol.npz", tmp_path / "r", train_size=3, val_size=1) == \
        {"train": 3, "val": 1, "test": 2}
    assert prepare_dataset("md22", raw / "md22_adenine-thymine.npz", tmp_path / "m", train_size=1, val_size=1) == \
        {"train": 1, "val": 1, "test": 1}
    assert prepare_dataset("qm9", raw / "qm9", tmp_path / "q", val_size=1, test_size=1) == {"train": 4, "val": 1, "test": 1}


def test_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "x").write_text("")
    assert tool_main("make-demo-data", ["--out", str(tmp_path)]) == 2
    assert "is not empty; pass --force" in capsys.readouterr().err
