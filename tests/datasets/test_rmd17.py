"""rMD17 .npz -> fairchem LMDBs: kcal/mol -> eV, JMP's 950/50/rest split from RandomState(42)."""

import numpy as np
import pytest
from dataset_helpers import KCAL_MOL_EV, position_key, read_splits

from fairchem_prune.datasets import prepare_dataset
from fairchem_prune.errors import PruneError


def write_rmd17(path, frames, seed=0, **changes):
    """An rMD17 file as distributed: the four arrays plus ``old_*`` references to MD17."""
    rng = np.random.default_rng(seed)
    arrays = dict(
        nuclear_charges=np.array([8, 1, 1], dtype=np.int64),
        coords=rng.normal(0.0, 1.0, (frames, 3, 3)),
        energies=rng.normal(-47_000.0, 5.0, frames),
        forces=rng.normal(0.0, 20.0, (frames, 3, 3)),
        old_indices=np.arange(frames), old_energies=rng.normal(size=frames), old_forces=rng.normal(size=(frames, 3, 3)),
    )
    arrays.update(changes)
    np.savez(path, **arrays)
    return arrays


def test_jmp_split_units_and_no_frame_lost(tmp_path):
    raw = write_rmd17(tmp_path / "rmd17_water.npz", 1012)
    sizes = prepare_dataset("rmd17", tmp_path / "rmd17_water.npz", tmp_path / "out")
    assert sizes == {"train": 950, "val": 50, "test": 12}
    splits = read_splits(tmp_path / "out")
    assert {name: len(entries) for name, entries in splits.items()} == sizes

    order = np.random.RandomState(42).permutation(1012)  # JMP's shuffle
    assert [int(d.sid) for d in splits["train"]] == order[:950].tolist()
    assert [int(d.sid) for d in splits["val"]] == order[950:1000].tolist()
    sids = [int(d.sid) for entries in splits.values() for d in entries]
    assert sorted(sids) == list(range(1012))
    keys = {position_key(d.pos) for entries in splits.values() for d in entries}
    assert keys == {position_key(p.astype(np.float32)) for p in raw["coords"]}

    for d in splits["test"]:
        i = int(d.sid)
        assert d.energy == pytest.approx(raw["energies"][i] * KCAL_MOL_EV, rel=1e-7)
        np.testing.assert_allclose(d.forces.numpy(), raw["forces"][i] * KCAL_MOL_EV, rtol=1e-5, atol=1e-6)
        assert d.atomic_numbers.tolist() == [8, 1, 1] and not d.pbc.any()
        assert d.tags.tolist() == [2, 2, 2]  # JMP: tag 2 on every atom of a molecule


def test_sizes_seed_and_determinism(tmp_path):
    write_rmd17(tmp_path / "a.npz", 120)
    sizes = prepare_dataset("rmd17", tmp_path / "a.npz", tmp_path / "x", seed=7, train_size=100, val_size=10)
    assert sizes == {"train": 100, "val": 10, "test": 10}
    prepare_dataset("rmd17", tmp_path / "a.npz", tmp_path / "y", seed=7, train_size=100, val_size=10)
    for name in ("train", "val", "test"):
        assert (tmp_path / "x" / name / "data.lmdb").exists()
    x, y = read_splits(tmp_path / "x"), read_splits(tmp_path / "y")
    assert [int(d.sid) for d in x["val"]] == [int(d.sid) for d in y["val"]]
    assert [int(d.sid) for d in x["val"]] == np.random.RandomState(7).permutation(120)[100:110].tolist()


def test_too_small_file_is_an_error(tmp_path):
    write_rmd17(tmp_path / "small.npz", 1000)  # 950 + 50 leaves no test frame
    with pytest.raises(PruneError, match="holds 1000 structures, too few"):
        prepare_dataset("rmd17", tmp_path / "small.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, message", [
    (dict(forces=None), "key 'forces' is missing"),
    (dict(coords=np.zeros((30, 4, 3))), "key 'coords' has shape \\(30, 4, 3\\), expected \\(N, 3, 3\\)"),
    (dict(energies=np.where(np.arange(30) == 5, np.nan, 1.0)), "key 'energies' contains NaN"),
])
def test_bad_raw_file_names_file_and_key(tmp_path, change, message):
    arrays = write_rmd17(tmp_path / "bad.npz", 30)
    arrays.update(change)
    np.savez(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(PruneError, match=f"bad.npz: {message}"):
        prepare_dataset("rmd17", tmp_path / "bad.npz", tmp_path / "out", train_size=10, val_size=5)
