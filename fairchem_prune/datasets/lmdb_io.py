"""Writing structures into LMDB files that fairchem 1.x's ``lmdb`` dataset (``LmdbDataset``) reads, and
opening them with it.

The layout is fairchem's: one pickled ``torch_geometric.data.Data`` per key ``b"0"``, ``b"1"``, ...
and the number of entries under ``b"length"``. Graphs come from fairchem's ``AtomsToGraphs``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path

import lmdb
from ase import Atoms
from fairchem.core.preprocessing import AtomsToGraphs
from torch_geometric.data import Data

from fairchem_prune import console
from fairchem_prune.errors import PruneError
from fairchem_prune.files import atomic_path, refuse_existing

#: 1 TiB map: LMDB reserves address space, not disk
_MAP_SIZE = 1 << 40


def atoms_to_data(atoms: Atoms, sid: int, energy: bool = True, forces: bool = True) -> Data:
    """fairchem graph of ``atoms`` with its calculator's energy (eV) and forces (eV/Å) as
    ``energy`` / ``forces``, ``sid`` and ``fid``; edges are built on the fly by the models."""
    a2g = AtomsToGraphs(r_edges=False, r_pbc=True, r_energy=energy, r_forces=forces, r_fixed=True)
    data = a2g.convert(atoms, sid=sid)
    data.fid = 0
    return data


def write_lmdb(path: str | Path, data: Iterable[Data], overwrite: bool = False, progress: bool = False,
               total: int | None = None) -> int:
    """Write ``data`` to the LMDB file ``path`` (a ``.lmdb`` file). Returns the number of entries.
    ``progress``: a bar of the entries written (of ``total``, when given) on stderr.

    The file is written next to its final name and moved into place when complete, so an
    interrupted run leaves no half-written LMDB behind.
    """
    path = Path(path)
    refuse_existing(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with atomic_path(path) as tmp:
        lock = Path(f"{tmp}-lock")
        lock.unlink(missing_ok=True)
        env = lmdb.open(str(tmp), map_size=_MAP_SIZE, subdir=False, meminit=False, map_async=True)
        try:
            with env.begin(write=True) as txn:
                entries = console.progress(data, desc=f"writing {path.name}", total=total, unit="entry", disable=not progress)
                for count, item in enumerate(entries, 1):
                    txn.put(f"{count - 1}".encode("ascii"), pickle.dumps(item, protocol=-1))
                txn.put(b"length", pickle.dumps(count, protocol=-1))
            env.sync()
        finally:
            env.close()
            lock.unlink(missing_ok=True)
    return count


def lmdb_files(path: str | Path, name: str = "data") -> list[Path]:
    """The LMDB files of ``path`` (a file, or a folder of ``*.lmdb``); a one-line PruneError naming the
    option ``name`` if there is no such file or folder, or the folder holds none."""
    path = Path(path)
    if not path.exists():
        raise PruneError(f"{name} {path}: no such LMDB file or folder")
    if not path.is_dir():
        return [path]
    files = sorted(path.glob("*.lmdb"))
    if not files:
        raise PruneError(f"{name} {path}: the folder exists but holds no .lmdb files; give an LMDB file or a folder "
                         "of *.lmdb files (tools/prepare_dataset.py writes them)")
    return files


def open_lmdb_dataset(path: str | Path):
    """fairchem's ``LmdbDataset`` of the LMDB file or folder (every ``*.lmdb`` in it) ``path``. A missing,
    empty or corrupt one is a one-line PruneError; each file is opened with ``lmdb`` first, because a
    ``LmdbDataset`` whose constructor failed prints a traceback of its own when it is collected."""
    from fairchem.core.datasets import LmdbDataset

    path = Path(path)
    for file in lmdb_files(path):
        try:
            lmdb.open(str(file), subdir=False, readonly=True, lock=False).close()
        except lmdb.Error as err:
            raise PruneError(f"data {file} cannot be read as a fairchem LMDB ({err})".splitlines()[0]) from None
    return LmdbDataset({"src": str(path)})
