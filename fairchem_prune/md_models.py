"""Checkpoints and structures for :mod:`fairchem_prune.md_check`: fairchem's ``OCPCalculator`` for each
checkpoint (with whether its forces are energy gradients, from the architecture's adapter) and starting
structures from a fairchem LMDB or any file ASE reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from fairchem_prune.errors import PruneError


def data_to_atoms(data) -> Atoms:
    """A fairchem graph (one structure: ``atomic_numbers``, ``pos``, ``cell``, ``pbc``, ``tags``,
    ``fixed``) as ASE atoms."""
    if getattr(data, "pbc", None) is not None:
        pbc = data.pbc.reshape(-1).numpy()[:3].astype(bool)
    else:
        pbc = np.array([bool(np.abs(data.cell.numpy()).sum() > 0)] * 3)
    atoms = Atoms(numbers=data.atomic_numbers.numpy().astype(int), positions=data.pos.numpy(),
                  cell=data.cell.numpy().reshape(3, 3), pbc=pbc)
    if getattr(data, "tags", None) is not None:
        atoms.set_tags(data.tags.numpy().astype(int))
    if getattr(data, "fixed", None) is not None and int(data.fixed.sum()):
        atoms.set_constraint(FixAtoms(indices=np.nonzero(data.fixed.numpy())[0]))
    return atoms


def read_structures(path: str | Path, count: int) -> list[Atoms]:
    """The first ``count`` structures of a fairchem LMDB (file or folder of ``.lmdb``) or of any file ASE
    reads (every frame)."""
    path = Path(path)
    if count < 1:
        raise PruneError(f"--num-structures must be at least 1, got {count}")
    if not path.exists():
        raise PruneError(f"structures {path}: no such file or folder")
    if path.is_dir() or path.suffix == ".lmdb":
        from fairchem_prune.datasets.lmdb_io import open_lmdb_dataset

        dataset = open_lmdb_dataset(path)
        return [data_to_atoms(dataset[i]) for i in range(min(count, len(dataset)))]
    import ase.io

    try:
        frames = ase.io.read(str(path), index=f":{count}")
    except Exception as err:  # ASE raises many types for unreadable files
        raise PruneError(f"structures {path} cannot be read by ASE ({type(err).__name__}: {err})".splitlines()[0]) from None
    return list(frames)


def checkpoint_calculators(checkpoints: dict[str, Path], device: str = "cpu",
                           log: str | Path | None = None) -> tuple[dict[str, Callable], dict[str, str]]:
    """(name -> a factory of the checkpoint's ``OCPCalculator``, name -> "gradient" or "direct" forces).
    Each is :func:`fairchem_prune.evaluation.calculator`: fairchem's config dump goes to the file ``log``
    (None: nowhere), and unfitted scale factors are stored as the identity (no warning per factor on
    every step)."""
    from fairchem_prune.checkpoints import load_source
    from fairchem_prune.evaluation import calculator

    factories, kinds = {}, {}
    for name, path in checkpoints.items():
        source = load_source(path)  # a clear error for a missing, corrupt or unknown checkpoint
        kinds[name] = "gradient" if source.architecture.forces_are_gradients(source.model) else "direct"
        factories[name] = lambda path=path: calculator(path, device, log)
    return factories, kinds
