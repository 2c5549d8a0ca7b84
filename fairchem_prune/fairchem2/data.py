"""Structures for the fairchem 2 tools: the first N structures of a file ASE reads (extxyz with energies
and forces, ...), of an ASE database (``.db``) or of a fairchem 2 ASE-LMDB data set (``.aselmdb`` files
or a folder of them, read by fairchem's own ``AseDBDataset``, as its training reads them).

Charge and spin (what UMA's ``omol`` task embeds) are kept in ``atoms.info``; where a structure has
none, the defaults of ``FAIRChemCalculator`` apply (charge 0; spin 1 for omol, 0 otherwise) unless the
caller gives others. Labels (energy, forces, stress) are the ``atoms.calc`` results the file carries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from ase import Atoms

from fairchem_prune.errors import PruneError

#: what fairchem's AseDBDataset reads (one file, or the files of a folder)
DATABASE_SUFFIXES = (".aselmdb", ".db")
LABELS = ("energy", "forces", "stress")


def default_charge_spin(task: str | None) -> tuple[int, int]:
    """(charge, spin) of a structure without them, as ``FAIRChemCalculator`` sets them."""
    return 0, 1 if task == "omol" else 0


def _chosen(total: int, count: int, seed: int | None) -> list[int]:
    """The first ``count`` of ``total`` indices, or (``seed`` given) a seeded random subset of them."""
    if seed is None:
        return list(range(min(count, total)))
    return np.random.default_rng(seed).permutation(total)[:count].tolist()


def _database(path: Path):
    """fairchem's ``AseDBDataset`` of ``path`` (a file or a folder of them); PruneError where it cannot read it."""
    from fairchem.core.datasets import AseDBDataset

    if path.is_dir() and not any(p.suffix in DATABASE_SUFFIXES for p in path.iterdir()):
        raise PruneError(f"structures {path}: the folder holds no ASE database (.aselmdb / .db files)")
    try:
        return AseDBDataset({"src": str(path)})
    except Exception as err:  # ASE / lmdb raise many types for foreign or empty files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PruneError(f"structures {path} cannot be read as an ASE database ({type(err).__name__}: {reason})") from None


def dataset_size(path: str | Path) -> int:
    """The number of structures of the ASE database(s) at ``path``."""
    return len(_database(Path(path)))


def _database_atoms(path: Path, count: int, seed: int | None) -> list[Atoms]:
    dataset = _database(path)
    return [dataset.get_atoms(i) for i in _chosen(len(dataset), count, seed)]


def read_structures(path: str | Path, count: int, task: str | None = None, charge: int | None = None,
                    spin: int | None = None, need_labels: tuple[str, ...] = (), seed: int | None = None) -> list[Atoms]:
    """The first ``count`` structures of ``path`` (``seed`` given: a seeded random subset of ``count``) with ``info["charge"]``, ``info["spin"]`` (their own, else
    ``charge`` / ``spin``, else the calculator's defaults for ``task``). ``need_labels``: the labels
    every structure must carry (PruneError naming the first that lacks one)."""
    path = Path(path)
    if count < 1:
        raise PruneError(f"--num-structures / --num-samples must be at least 1, got {count}")
    if not path.exists():
        raise PruneError(f"structures {path}: no such file or folder")
    if path.is_dir() or path.suffix in DATABASE_SUFFIXES:
        frames = _database_atoms(path, count, seed)
    else:
        import ase.io

        try:
            frames = ase.io.read(str(path), index=f":{count}" if seed is None else ":")
        except Exception as err:  # ASE raises many types for unreadable files
            raise PruneError(f"structures {path} cannot be read by ASE ({type(err).__name__}: {err})".splitlines()[0]) from None
        frames = [frames] if isinstance(frames, Atoms) else list(frames)
        frames = [frames[i] for i in _chosen(len(frames), count, seed)]
    if not frames:
        raise PruneError(f"structures {path}: no structures in it")
    default_charge, default_spin = default_charge_spin(task)
    for i, atoms in enumerate(frames):
        atoms.info["charge"] = int(atoms.info.get("charge", default_charge if charge is None else charge))
        atoms.info["spin"] = int(atoms.info.get("spin", default_spin if spin is None else spin))
        missing = [name for name in need_labels if labels(atoms).get(name) is None]
        if missing:
            raise PruneError(f"structure {i} of {path} has no {' or '.join(missing)} label; relevance needs the "
                             f"labels of the task's loss (e.g. an extxyz or ASE database written with a calculator's results)")
    logging.getLogger(__name__).info("read %d structures from %s", len(frames), path)
    return frames


def labels(atoms: Atoms) -> dict[str, np.ndarray | float | None]:
    """The energy, forces and stress a structure carries (``atoms.calc`` results, or ``atoms.info``)."""
    results = dict(getattr(atoms.calc, "results", {}) or {})
    return {name: atoms.info.get(name, results.get(name)) for name in LABELS}


def put_task_labels(data, tasks) -> None:
    """Give one structure (an ``AtomicData``) its label of each task's property under the task's name
    (the name's own label first), shaped as the task's ``out_spec`` says (per atom for an atom-level
    task; stress ``(1, 9)``); a missing label inf, fairchem's "no label", which ``compute_loss`` and
    the metrics mask out."""
    import torch

    for task in tasks:
        shape = [int(data.natoms), *task.out_spec.dim] if task.level == "atom" else list(task.out_spec.dim)
        name = task.name if task.name in data else task.property
        if name in data:
            data[task.name] = data[name].reshape(shape)
        else:
            data[task.name] = torch.full(shape, torch.inf, dtype=getattr(torch, str(task.out_spec.dtype)))
