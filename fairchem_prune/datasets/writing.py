"""Writing converted structures as fairchem LMDBs: ``OUT/{train,val,test}/data.lmdb``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ase import Atoms

from fairchem_prune.datasets.splits import SPLITS, SplitSpec, split_indices, split_sizes
from fairchem_prune.errors import PruneError
from fairchem_prune.datasets.lmdb_io import atoms_to_data, write_lmdb


def write_splits(structures: Sequence[Atoms], out: str | Path, spec: SplitSpec, seed: int,
                 sizes: dict[str, int | None], source: str, forces: bool, force: bool = False) -> dict[str, int]:
    """Split ``structures`` (each with a calculator holding its labels; its index in ``structures``
    becomes the ``sid``) and write ``out/<split>/data.lmdb``. Returns the size of each split.

    Existing LMDBs are an error unless ``force``; nothing is written then.
    """
    out = Path(out)
    counts = split_sizes(len(structures), spec, sizes, source)
    targets = {name: out / name / "data.lmdb" for name in SPLITS}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not force:
        raise PruneError(f"{existing[0]} already exists; pass --force to overwrite or choose another --out")
    for name, index in split_indices(len(structures), counts, seed).items():
        data = (atoms_to_data(structures[i], sid=int(i), forces=forces) for i in index)
        write_lmdb(targets[name], data, overwrite=force, progress=True, total=len(index))
    return counts
